"""``bff doctor`` against the demo (every check passes) and against broken setups, each of which must produce its
own FAIL (or WARN) with its fix. Real servers on loopback: the reference IdP, the demo API, bff, redis-server;
stubs only where the real servers cannot be broken that way (an IdP without S256 or with a skewed clock, a proxy
in front of bff that adds CORS or strips HttpOnly)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bff.cli import main
from bff.config import Config, Secret
from bff.doctor import Check, run_doctor
from bff.doctor.report import is_ok
from tests.support.doctor_stubs import Demo, cookies_readable, cors_everywhere, front_proxy, running_demo, stub_idp
from tests.support.pki import TestPKI
from tests.support.ports import free_port
from tests.support.redis_server import RedisProcess, require_redis_server
from tests.support.servers import ServerTLS, serve
from tests.support.stack import bound_socket

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The demo on a Redis that keeps its data (append-only file), as production should."""
    with (
        RedisProcess(require_redis_server(), args=["--appendonly", "yes"]) as redis,
        running_demo(tmp_path_factory.mktemp("demo"), redis.url) as demo,
    ):
        yield demo


def by_id(checks: list[Check]) -> dict[str, Check]:
    ids = [c.id for c in checks]
    assert len(ids) == len(set(ids)), f"duplicate check ids: {ids}"
    return {c.id: c for c in checks}


def with_oidc(config: Config, **changes: object) -> Config:
    return dataclasses.replace(config, oidc=dataclasses.replace(config.oidc, **changes))  # type: ignore[arg-type]


def with_route(config: Config, path: str, **changes: object) -> Config:
    routes = tuple(dataclasses.replace(r, **changes) if r.path == path else r for r in config.routes)  # type: ignore[arg-type]
    return dataclasses.replace(config, routes=routes)


def assert_fails(checks: list[Check], check_id: str, *, says: str, fix: str) -> None:
    found = by_id(checks)[check_id]
    assert (found.status, says in found.message, fix in found.fix) == ("FAIL", True, True), found
    assert not is_ok(checks)


async def test_the_demo_passes_every_check(demo: Demo) -> None:
    checks = await run_doctor(demo.config, url=demo.url)
    found = by_id(checks)
    not_passed = {c.id: c.status for c in checks if c.status != "PASS"}
    # Plain http on localhost: HSTS does not apply (docs/doctor.md). The reference IdP's PAR endpoint takes the dry
    # push, and bff's own login is pushed: the browser's redirect carries client_id and request_uri only.
    # The demo does not run profile = "fapi2" (tests/doctor/test_doctor_profile.py does).
    assert not_passed == {"browser.hsts": "SKIP", "idp.fapi2": "SKIP"}, checks
    assert "pushed or signed request" in found["browser.login"].message
    assert is_ok(checks, strict=True)
    for group in ("idp", "client", "redis", "upstream", "browser"):
        assert any(c.group == group for c in checks), group
    expected = {"client.credentials", "redis.maxmemory_policy", "upstream[/api].without_token", "browser.no_token"}
    assert expected <= set(found)


async def test_a_wrong_issuer_fails_with_the_idps_value(demo: Demo) -> None:
    # The classic: a trailing slash the IdP does not write (Discovery 4.3 compares exactly).
    issuer = demo.config.oidc.issuer
    checks = await run_doctor(with_oidc(demo.config, issuer=issuer + "/"))
    assert_fails(checks, "idp.discovery.issuer", says=f'"{issuer}"', fix=f'issuer = "{issuer}"')
    assert by_id(checks)["client.credentials"].status == "SKIP"


async def test_an_idp_without_s256_fails() -> None:
    with stub_idp(code_challenge_methods_supported=["plain"]) as url:
        config = with_oidc(_offline_config(url), issuer=url)
        checks = await run_doctor(config)
    assert_fails(checks, "idp.pkce.s256", says="not S256", fix="S256")


async def test_an_idp_without_logout_support_warns() -> None:
    with stub_idp(backchannel_logout_supported=None, revocation_endpoint=None) as url:
        checks = by_id(await run_doctor(with_oidc(_offline_config(url), issuer=url)))
    assert (checks["idp.backchannel_logout"].status, checks["idp.revocation"].status) == ("WARN", "WARN")
    assert "backchannel-logout" in checks["idp.backchannel_logout"].fix


@pytest.mark.parametrize(("offset", "status"), [(3600.0, "FAIL"), (-45.0, "WARN"), (0.0, "PASS")])
async def test_the_idps_clock_is_compared_with_clock_skew(offset: float, status: str) -> None:
    with stub_idp(clock_offset=offset) as url:
        checks = by_id(await run_doctor(with_oidc(_offline_config(url), issuer=url, clock_skew=60.0)))
    assert checks["idp.clock_skew"].status == status, checks["idp.clock_skew"]
    if status == "FAIL":
        assert "ahead" in checks["idp.clock_skew"].message
        assert "NTP" in checks["idp.clock_skew"].fix


async def test_a_wrong_client_secret_fails_and_is_never_printed(demo: Demo) -> None:
    wrong = "wrong-secret-0123456789-abcdefghij"
    checks = await run_doctor(with_oidc(demo.config, client_secret=Secret(wrong)))
    assert_fails(checks, "client.credentials", says="refused the client's credentials", fix="[oidc] client_secret")
    assert by_id(checks)["client.redirect_uri"].status == "PASS"
    assert wrong not in json.dumps([c.to_json() for c in checks])


async def test_an_unregistered_redirect_uri_fails(demo: Demo) -> None:
    other = demo.url + "/elsewhere/callback"
    checks = await run_doctor(with_oidc(demo.config, redirect_uri=other))
    assert_fails(checks, "client.redirect_uri", says=other, fix=f"register {other}")


async def test_a_redis_that_evicts_any_key_fails(demo: Demo) -> None:
    args = ["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"]
    with RedisProcess(require_redis_server(), args=args) as redis:
        config = dataclasses.replace(
            demo.config, session=dataclasses.replace(demo.config.session, store=redis.url, store_replicas=1)
        )
        checks = await run_doctor(config)
    assert_fails(checks, "redis.maxmemory_policy", says="allkeys-lru", fix="noeviction")
    assert_fails(checks, "redis.replication", says="0 connected replica(s)", fix="store_replicas")
    assert by_id(checks)["redis.persistence"].status == "WARN"


async def test_an_unreachable_redis_fails_and_its_password_is_masked(demo: Demo) -> None:
    port = free_port()  # nothing listens there
    url = f"redis://:hunter2-redis-password@127.0.0.1:{port}/0"
    checks = await run_doctor(
        dataclasses.replace(demo.config, session=dataclasses.replace(demo.config.session, store=url))
    )
    assert_fails(checks, "redis.reachable", says=f"127.0.0.1:{port}", fix="runs")
    assert "hunter2" not in json.dumps([c.to_json() for c in checks])


async def test_an_unreachable_upstream_fails(demo: Demo) -> None:
    upstream = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    checks = await run_doctor(with_route(demo.config, "/api", upstream=upstream))
    assert_fails(checks, "upstream[/api].reachable", says=upstream, fix="routes[].upstream")
    assert by_id(checks)["upstream[/api/public].reachable"].status == "PASS"


async def test_an_upstream_with_another_hosts_certificate_fails(demo: Demo, tmp_path: Path) -> None:
    pki = TestPKI(tmp_path)
    issued = pki.server("orders", host="orders.example.net")

    async def app(scope: object, receive: object, send: object) -> None:  # pragma: no cover - never reached
        raise AssertionError("the TLS handshake must fail first")

    with serve(app, tls=ServerTLS(issued.cert, issued.key)) as upstream:
        config = with_route(demo.config, "/api", upstream=upstream, ca_bundle=str(pki.ca.cert))
        checks = await run_doctor(config)
    assert_fails(checks, "upstream[/api].tls", says="certificate", fix="certificate for its host name")
    assert by_id(checks)["upstream[/api].reachable"].status == "SKIP"


async def test_a_hung_idp_fails_within_the_timeout() -> None:
    # A listening socket nobody accepts from: the connection opens, no answer ever comes.
    with bound_socket() as hung:
        hung.listen(8)
        url = f"http://127.0.0.1:{hung.getsockname()[1]}"
        checks = await run_doctor(with_oidc(_offline_config(url), issuer=url), call_timeout=0.5)
    assert_fails(checks, "idp.discovery.fetch", says="no answer", fix="[oidc] issuer")


async def test_cors_on_bff_endpoints_fails(demo: Demo) -> None:
    with front_proxy(demo.url, cors_everywhere) as url:
        checks = await run_doctor(demo.config, url=url)
    assert_fails(checks, "browser.cors", says="access-control-allow-origin", fix="remove every CORS rule")
    assert by_id(checks)["browser.origin"].status == "WARN"  # probed elsewhere than public_origin: said so


async def test_a_cookie_without_httponly_fails(demo: Demo) -> None:
    with front_proxy(demo.url, cookies_readable) as url:
        checks = await run_doctor(demo.config, url=url)
    assert_fails(checks, "browser.cookie.httponly", says="without HttpOnly", fix="Set-Cookie through unchanged")
    assert by_id(checks)["browser.cookie.secure"].status == "PASS"


async def test_a_front_that_drops_sec_fetch_site_fails(demo: Demo) -> None:
    with front_proxy(demo.url, drop=(b"sec-fetch-site",)) as url:
        checks = await run_doctor(demo.config, url=url)
    assert_fails(checks, "browser.csrf.fetch_site", says="was not refused", fix="strip nothing in front of it")
    assert by_id(checks)["browser.csrf.header"].status == "PASS"


def test_the_command_line_exits_1_on_a_fail_and_prints_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with stub_idp(code_challenge_methods_supported=["plain"]) as idp:
        config = tmp_path / "bff.toml"
        config.write_text(_toml(idp))
        code = main(["doctor", "--config", str(config), "--json", "--timeout", "2"])
    document = json.loads(capsys.readouterr().out)
    assert (code, document["version"], document["ok"]) == (1, 1, False)
    failing = {c["id"] for c in document["checks"] if c["status"] == "FAIL"}
    assert "idp.pkce.s256" in failing
    assert "test-secret" not in json.dumps(document)


def test_the_command_line_prints_a_table_and_strict_fails_on_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with stub_idp(backchannel_logout_supported=None) as idp:
        config = tmp_path / "bff.toml"
        config.write_text(_toml(idp, routes=False))
        lenient = main(["doctor", "--config", str(config)])
        table = capsys.readouterr().out
        strict = main(["doctor", "--config", str(config), "--strict"])
    assert (lenient, strict) == (0, 1)
    assert "WARN  idp.backchannel_logout" in table
    assert "fix: enable back-channel logout" in table
    assert "\033[" not in table  # no colour when stdout is not a terminal


def _offline_config(issuer: str) -> Config:
    from tests.support.configs import base_document, make_config

    doc = base_document(public_origin="http://localhost:8000", issuer=issuer)
    doc["routes"] = []
    return make_config(doc)


def _toml(issuer: str, *, routes: bool = True) -> str:
    route = '[[routes]]\npath = "/api"\nupstream = "http://127.0.0.1:9"\ntoken = "user"\n' if routes else ""
    return f"""
[server]
public_origin = "http://localhost:8000"
[session]
keys = ["{"k" * 40}"]
[oidc]
issuer = "{issuer}"
client_id = "spa-bff"
client_secret = "test-secret-0123456789-abcdefghij"
{route}"""


async def test_a_discovery_document_with_unusable_urls_fails_without_crashing() -> None:
    with stub_idp(jwks_uri="http://[::1") as url:
        checks = await run_doctor(with_oidc(_offline_config(url), issuer=url))
    assert_fails(checks, "idp.jwks", says="not a usable URL", fix="jwks_uri")


async def test_a_dry_par_checks_the_credentials() -> None:
    config = _offline_config("")
    secret = config.oidc.client_secret
    assert secret is not None
    with stub_idp(par_secret=secret.reveal(), require_pushed_authorization_requests=True) as url:
        accepted = by_id(await run_doctor(with_oidc(config, issuer=url)))
        refused = await run_doctor(with_oidc(config, issuer=url, client_secret=Secret("another-secret-0123456789")))
    assert (accepted["client.par"].status, accepted["client.redirect_uri"].status) == ("PASS", "SKIP")
    assert_fails(refused, "client.par", says="refused the client's credentials", fix="[oidc] client_secret")


async def test_a_replica_as_the_store_fails_and_answers_cannot_drive_the_terminal(demo: Demo) -> None:
    binary = require_redis_server()
    with (
        RedisProcess(binary) as primary,
        RedisProcess(binary, args=["--replicaof", "127.0.0.1", str(primary.port)]) as replica,
        stub_idp(revocation_endpoint="http://127.0.0.1:9/revoke\x1b[2J") as idp,
    ):
        session = dataclasses.replace(demo.config.session, store=replica.url)
        config = with_oidc(dataclasses.replace(demo.config, session=session), issuer=idp)
        checks = await run_doctor(config)
    assert_fails(checks, "redis.replication", says="read-only replica", fix="primary")
    assert by_id(checks)["idp.revocation"].message.endswith("/revoke?[2J")


@pytest.mark.parametrize("topology", ["redis_sentinel_url", "redis_cluster_url"])
async def test_sentinel_and_cluster_stores_are_diagnosed(
    demo: Demo, topology: str, request: pytest.FixtureRequest
) -> None:
    url: str = request.getfixturevalue(topology)
    checks = by_id(
        await run_doctor(dataclasses.replace(demo.config, session=dataclasses.replace(demo.config.session, store=url)))
    )
    statuses = {i: checks[i].status for i in ("redis.reachable", "redis.version", "redis.replication")}
    assert statuses == {"redis.reachable": "PASS", "redis.version": "PASS", "redis.replication": "PASS"}
    assert "test-pass" not in json.dumps([c.to_json() for c in checks.values()])  # the URL's password
