"""Mutual TLS end to end (RFC 8705), real processes on loopback: ``bff serve``, the reference IdP over https
authenticating bff by ``tls_client_auth`` and binding its access tokens to bff's certificate, and upstreams that
want a client certificate (one of them accepts only tokens bound to the certificate it is shown). Every
certificate comes from the test's own CA.

Routes of the one bff:

- ``/api/bound``: the user's token to the binding upstream, with the IdP client certificate (``certificate_bound``);
- ``/api/other``: the user's token to the same upstream with another certificate: the bound token is refused;
- ``/api/alice``, ``/api/bob``: two certificates to one origin (no token): the pool keeps them apart;
- ``/api/nocert``, ``/api/stranger``: no certificate, and one of a CA the upstream does not trust: 502.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from tests.support.bff_process import expire_session_token, running_bff
from tests.support.browser import Browser
from tests.support.configs import SESSION_KEY
from tests.support.devidp import FORM, IdP, client, login_tx, running_devidp
from tests.support.mtls_upstream import MTLSUpstream, running_mtls_upstream
from tests.support.pki import Issued, TestPKI
from tests.support.servers import ServerTLS, free_port

XHR = {"X-CSRF": "1"}
PASSPHRASE = "bff idp key passphrase 0123456789"


@dataclass(frozen=True)
class World:
    bff: str
    config: Path
    idp: IdP
    plain: MTLSUpstream
    binding: MTLSUpstream
    certs: dict[str, Issued]
    pki: TestPKI
    redis_url: str


def route(path: str, upstream: str, ca: Path, cert: Issued | None, *, token: str = "none", extra: str = "") -> str:
    lines = [f'[[routes]]\npath = "{path}"\nupstream = "{upstream}"\ntoken = "{token}"\nca_bundle = "{ca}"']
    if cert is not None:
        lines.append(f'client_cert = "{cert.cert}"\nclient_key = "{cert.key}"')
    return "\n".join([*lines, extra]) + "\n"


#: The encrypted key's passphrase, from the environment of ``bff serve``.
PASSWORD_LINE = 'client_key_password = "${BFF_IDP_KEY_PASSWORD}"'


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("mtls")
    pki = TestPKI(tmp / "pki")
    certs = {
        "bff": pki.client("bff-client", password=PASSPHRASE),
        "other": pki.client("other-client"),
        "alice": pki.client("alice-client"),
        "bob": pki.client("bob-client"),
        "stranger": TestPKI(tmp / "stranger-pki", "a CA nobody trusts").client("stranger"),
    }
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    registration = replace(
        client(secret=None, redirect_uri=f"{origin}/bff/callback", post_logout_redirect_uri=f"{origin}/"),
        token_endpoint_auth_method="tls_client_auth",
        tls_client_auth_subject_dn="CN=bff-client",
        tls_client_certificate_bound_access_tokens=True,
    )
    idp_cert = pki.server("idp")
    with (
        running_devidp(tmp / "idp", (registration,), tls=ServerTLS(idp_cert.cert, idp_cert.key, pki.ca.cert)) as idp,
        running_mtls_upstream(pki.server("plain"), pki.ca.cert) as plain,
        running_mtls_upstream(pki.server("binding"), pki.ca.cert, require_binding=True) as binding,
    ):
        ca = pki.ca.cert
        config = tmp / "bff.toml"
        config.write_text(
            f"""
[server]
listen = "127.0.0.1:{port}"
public_origin = "{origin}"
[session]
store = "{redis_url}"
keys = ["{SESSION_KEY}"]
[oidc]
issuer = "{idp.url}"
client_id = "spa-bff"
token_endpoint_auth_method = "tls_client_auth"
client_cert = "{certs["bff"].cert}"
client_key = "{certs["bff"].key}"
{PASSWORD_LINE}
ca_bundle = "{ca}"
"""
            + route(
                "/api/bound",
                binding.url,
                ca,
                certs["bff"],
                token="user",
                extra=f"{PASSWORD_LINE}\ncertificate_bound = true",
            )
            + route("/api/other", binding.url, ca, certs["other"], token="user")
            + route("/api/alice", plain.url, ca, certs["alice"])
            + route("/api/bob", plain.url, ca, certs["bob"])
            + route("/api/nocert", plain.url, ca, None)
            + route("/api/stranger", plain.url, ca, certs["stranger"])
        )
        with running_bff(config, port, tmp / "bff.log", env={"BFF_IDP_KEY_PASSWORD": PASSPHRASE}):
            yield World(origin, config, idp, plain, binding, certs, pki, redis_url)


@pytest.fixture
async def browser(world: World) -> AsyncIterator[Browser]:
    b = Browser(verify=ssl.create_default_context(cafile=str(world.pki.ca.cert)))
    yield b
    await b.aclose()


async def sign_in(browser: Browser, world: World) -> None:
    hops = await browser.follow(f"{world.bff}/bff/login")
    assert hops[-1].status_code == 200, hops[-1].text
    assert "name='tx'" in hops[-1].text, "the IdP showed its login form"
    body = f"tx={login_tx(hops[-1])}&username=alice&password=wonderland".encode()
    submitted = await browser.request("POST", f"{world.idp.url}/login", headers=FORM, content=body)
    assert submitted.status_code == 302, submitted.text
    hops = await browser.follow(submitted.headers["location"])
    assert hops[-1].status_code in (200, 302, 404), hops[-1].text  # back on the SPA's origin
    user = await browser.request("GET", f"{world.bff}/bff/user", headers=XHR)
    assert user.status_code == 200, user.text


async def test_without_a_client_certificate_the_upstream_handshake_fails_with_a_clear_502(
    world: World, browser: Browser
) -> None:
    for path in ("/api/nocert/x", "/api/stranger/x"):
        before = len(world.plain.seen)
        response = await browser.request("GET", world.bff + path, headers=XHR)
        assert response.status_code == 502, path
        assert response.json()["error"] == "upstream_tls_error", path
        assert len(world.plain.seen) == before  # refused at the handshake: no request reached the upstream


async def test_each_route_presents_its_own_certificate_on_its_own_connections(world: World, browser: Browser) -> None:
    by_route = {"alice": world.certs["alice"].x5t_s256, "bob": world.certs["bob"].x5t_s256}
    connections: dict[str, set[int]] = {"alice": set(), "bob": set()}
    for _ in range(4):
        for name, thumb in by_route.items():
            response = await browser.request("GET", f"{world.bff}/api/{name}/x", headers=XHR)
            assert response.status_code == 200, response.text
            assert response.json()["client_cert"] == thumb
            connections[name].add(response.json()["connection"])
    assert connections["alice"].isdisjoint(connections["bob"])
    assert len(connections["alice"]) < 4  # kept alive and reused within the route
    assert len(connections["bob"]) < 4


async def test_tls_client_auth_login_and_refresh_give_tokens_only_the_bound_certificate_can_use(
    world: World, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    await sign_in(browser, world)  # the code exchange authenticated bff by its certificate alone

    bound = await browser.request("GET", f"{world.bff}/api/bound/me", headers=XHR)
    assert bound.status_code == 200, bound.text
    assert bound.json()["bound"] is True
    assert bound.json()["client_cert"] == world.certs["bff"].x5t_s256

    # The same token with another certificate: the upstream refuses it (RFC 8705 3).
    other = await browser.request("GET", f"{world.bff}/api/other/me", headers=XHR)
    assert other.status_code == 401

    # A refresh, again by tls_client_auth: a new token, bound to the same certificate.
    cookie = browser.cookies(world.bff)["__Host-bff"]
    monkeypatch.setenv("BFF_IDP_KEY_PASSWORD", PASSPHRASE)  # the config, read here as bff reads it
    await expire_session_token(world.redis_url, world.config, cookie)
    refreshed = await browser.request("GET", f"{world.bff}/api/bound/me", headers=XHR)
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["bound"] is True
    assert refreshed.json()["token"] != bound.json()["token"]
