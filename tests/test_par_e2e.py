"""PAR (RFC 9126), signed request objects (RFC 9101) and the FAPI 2.0 profile end to end: bff and the reference IdP
as real servers on loopback. The login is pushed whenever the IdP offers PAR, the browser's URL at the IdP then
carries only ``client_id`` and a ``request_uri`` that works once; request objects are signed with the
``private_key_jwt`` key and verified by the IdP; ``profile = "fapi2"`` logs in against an IdP that supports it and
refuses, at start, one that does not, one line per missing capability (``bff check`` and ``bff serve`` too)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from joserfc.jwk import ECKey

from bff.app import BffApp
from bff.errors import ConfigError
from bff.session.memory_store import MemoryStore
from bff_devtools.devidp import ClientRegistration
from tests.support.browser import Browser
from tests.support.configs import base_document, make_config
from tests.support.devidp import IdP, running_devidp, sign_in_through_form
from tests.support.servers import free_port, serve
from tests.support.stack import bound_socket

XHR = {"X-CSRF": "1"}
SECRET = "bff-par-client-secret-0123456789"
CLIENT_ID = "bff-par"


class RecordingTransport(httpx.AsyncBaseTransport):
    """bff's transport to the IdP: the path and form of every POST (what bff pushed, never shown to the browser)."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.posts: list[tuple[str, dict[str, str]]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            await request.aread()
            self.posts.append((request.url.path, dict(parse_qsl(request.content.decode()))))
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()

    def paths(self) -> list[str]:
        return [path for path, _ in self.posts]


@dataclass
class World:
    idp: IdP
    bff: str
    transport: RecordingTransport
    doc: dict[str, Any] = field(default_factory=dict)


def client_key(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A private_key_jwt key for bff (PEM file) and its public JWK Set for the IdP's registration."""
    key = ECKey.generate_key("P-256", private=True)
    key.ensure_kid()
    path = tmp_path / "client-key.pem"
    path.write_bytes(key.as_pem(private=True))
    return path, {"keys": [key.as_dict(private=False)]}


def dpop_key(tmp_path: Path) -> Path:
    path = tmp_path / "dpop.pem"
    path.write_bytes(ECKey.generate_key("P-256", private=True).as_pem(private=True))
    return path


@contextlib.contextmanager
def running_world(
    tmp_path: Path,
    *,
    idp: dict[str, Any] | None = None,
    oidc: dict[str, Any] | None = None,
    signed: bool = False,
    start_bff: bool = True,
) -> Iterator[World]:
    """The IdP (``idp``: its settings) and bff (``oidc``: more of its ``[oidc]``); ``signed``: the client is
    registered with a public key and bff authenticates with ``private_key_jwt``. ``start_bff`` False: only the
    IdP runs, and ``doc`` is bff's configuration for it."""
    sock = bound_socket()
    origin = f"http://127.0.0.1:{sock.getsockname()[1]}"
    extra: dict[str, Any] = {}
    oidc = dict(oidc or {})
    if signed:
        key_file, jwks = client_key(tmp_path)
        extra = {"token_endpoint_auth_method": "private_key_jwt", "jwks": jwks}
        oidc.update(token_endpoint_auth_method="private_key_jwt", private_key_file=str(key_file))
    registration = ClientRegistration(
        CLIENT_ID,
        SECRET,
        redirect_uris=(f"{origin}/bff/callback",),
        post_logout_redirect_uris=(f"{origin}/",),
        **extra,
    )
    with running_devidp(tmp_path, (registration,), **(idp or {})) as server:
        doc = base_document(public_origin=origin, issuer=server.url)
        doc["oidc"].update(client_id=CLIENT_ID, client_secret=SECRET, **oidc)
        transport = RecordingTransport()
        if not start_bff:
            sock.close()
            yield World(server, origin, transport, doc)
            return
        app = BffApp(make_config(doc), store=MemoryStore(), idp_transport=transport)
        with serve(app, sock=sock) as url:
            yield World(server, url, transport, doc)


def query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    head, body, _ = (base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)) for p in token.split("."))
    return json.loads(head), json.loads(body)


async def logged_in(browser: Browser, world: World) -> list[httpx.Response]:
    hops = await sign_in_through_form(browser, world.bff)
    user = await browser.request("GET", f"{world.bff}/bff/user", headers=XHR)
    assert user.status_code == 200, user.text
    assert user.json()["sub"] == "alice-0001"
    return hops


async def test_the_login_is_pushed_and_the_browser_carries_only_the_request_uri(
    tmp_path: Path, browser: Browser
) -> None:
    with running_world(tmp_path) as world:
        hops = await logged_in(browser, world)
        to_idp = hops[0].headers["location"]
        assert set(query(to_idp)) == {"client_id", "request_uri"}, "no scope, redirect_uri, state or PKCE in the URL"
        assert query(to_idp)["request_uri"].startswith("urn:ietf:params:oauth:request_uri:")
        assert world.transport.paths() == ["/par", "/token"]
        pushed = world.transport.posts[0][1]
        assert (pushed["response_type"], pushed["code_challenge_method"]) == ("code", "S256")

        # RFC 9126 4: the request_uri works once; the same link again is refused by the IdP.
        again = await browser.request("GET", to_idp)
        assert again.status_code == 400
        assert "invalid_request_uri" in again.text


async def test_par_off_sends_the_parameters_in_the_url(tmp_path: Path, browser: Browser) -> None:
    with running_world(tmp_path, oidc={"par": "off"}) as world:
        hops = await logged_in(browser, world)
        assert {"scope", "state", "code_challenge", "redirect_uri"} <= set(query(hops[0].headers["location"]))
        assert world.transport.paths() == ["/token"]


async def test_an_idp_without_par_gets_plain_requests_under_auto(tmp_path: Path, browser: Browser) -> None:
    with running_world(tmp_path, idp={"par": False}) as world:
        hops = await logged_in(browser, world)
        assert "request_uri" not in query(hops[0].headers["location"])


async def test_an_idp_that_requires_par_refuses_a_plain_request(tmp_path: Path, browser: Browser) -> None:
    with running_world(tmp_path, idp={"require_pushed_authorization_requests": True}) as world:
        await logged_in(browser, world)  # bff pushes (par = "auto")
        plain = (
            world.idp.url
            + "/authorize?"
            + "&".join(
                f"{k}={v}"
                for k, v in {
                    "client_id": CLIENT_ID,
                    "response_type": "code",
                    "scope": "openid",
                    "redirect_uri": f"{world.bff}/bff/callback",
                }.items()
            )
        )
        refused = await browser.request("GET", plain)
        assert refused.status_code == 400
        assert "pushed authorization requests only" in refused.text


async def test_a_failed_push_is_a_clear_error_and_sets_no_login_cookie(tmp_path: Path, browser: Browser) -> None:
    # The IdP registers another redirect URI than bff sends: the push is refused with invalid_request.
    with running_world(tmp_path) as world:
        doc = dict(world.doc)
        doc["oidc"] = {**doc["oidc"], "redirect_uri": f"{world.bff}/bff/other-callback"}
        app = BffApp(make_config(doc), store=MemoryStore())
        with serve(app) as url:
            answer = await browser.request("GET", f"{url}/bff/login")
        assert answer.status_code == 502
        assert "error: idp_par_failed" in answer.text, "a page naming the error, for a top-level navigation"
        assert not [h for h in answer.headers.get_list("set-cookie") if "-login-" in h], "no login was started"


async def test_signed_request_objects_inside_the_push(tmp_path: Path, browser: Browser) -> None:
    with running_world(tmp_path, idp={"require_signed_request_object": True}, signed=True) as world:
        await logged_in(browser, world)
        path, pushed = world.transport.posts[0]
        assert path == "/par"
        assert set(pushed) == {"client_id", "request", "client_assertion", "client_assertion_type"}
        header, claims = jwt_parts(pushed["request"])
        assert (header["typ"], header["alg"]) == ("oauth-authz-req+jwt", "ES256")
        assert (claims["iss"], claims["client_id"], claims["aud"]) == (CLIENT_ID, CLIENT_ID, world.idp.url)
        assert claims["exp"] - claims["nbf"] <= 300
        assert claims["jti"]
        assert claims["code_challenge_method"] == "S256"
        assert "dpop_jkt" not in claims, "dpop is off"
        # Outside profile = "fapi2", the assertion's audience is the token endpoint (some IdPs refuse the issuer).
        assert jwt_parts(pushed["client_assertion"])[1]["aud"] == f"{world.idp.url}/token"


async def test_two_logins_in_a_row_each_with_fresh_jtis(tmp_path: Path, browser: Browser) -> None:
    """The reference IdP refuses a replayed request object or client assertion (``tests/devidp/test_replay.py``):
    bff's second full login (another browser, the IdP's form again) works, since every JWT it signs is new."""
    with running_world(tmp_path, idp={"require_signed_request_object": True}, signed=True) as world:
        await logged_in(browser, world)
        second = Browser()
        try:
            await logged_in(second, world)
        finally:
            await second.aclose()
        assert world.transport.paths() == ["/par", "/token", "/par", "/token"]
        objects = [jwt_parts(form["request"])[1] for _, form in world.transport.posts if "request" in form]
        assertions = [jwt_parts(form["client_assertion"])[1] for _, form in world.transport.posts]
        assert len({claims["jti"] for claims in objects + assertions}) == 6
        assert all(claims["exp"] - claims["iat"] <= 60 for claims in assertions), "short-lived (RFC 7523 3)"


async def test_signed_request_objects_without_par(tmp_path: Path, browser: Browser) -> None:
    idp = {"par": False, "require_signed_request_object": True}
    with running_world(tmp_path, idp=idp, signed=True) as world:
        hops = await logged_in(browser, world)
        sent = query(hops[0].headers["location"])
        assert set(sent) == {"client_id", "request", "response_type", "scope"}
        assert "state" not in sent, "the parameters travel inside the signed object only"


async def test_an_idp_requiring_request_objects_is_refused_without_a_key(tmp_path: Path) -> None:
    with running_world(tmp_path, idp={"require_signed_request_object": True}, start_bff=False) as world:
        app = BffApp(make_config(world.doc), store=MemoryStore())
        with pytest.raises(ConfigError, match="requires signed request objects"):
            async with app.lifespan():
                pass


def fapi2_oidc(tmp_path: Path) -> dict[str, Any]:
    return {"profile": "fapi2", "dpop": True, "dpop_key_file": str(dpop_key(tmp_path))}


async def test_fapi2_logs_in_against_an_idp_that_supports_it(tmp_path: Path, browser: Browser) -> None:
    with running_world(tmp_path, oidc=fapi2_oidc(tmp_path), signed=True) as world:
        hops = await logged_in(browser, world)
        assert set(query(hops[0].headers["location"])) == {"client_id", "request_uri"}
        assert world.transport.paths() == ["/par", "/token"]
        assert world.transport.posts[1][1]["client_assertion_type"].endswith("jwt-bearer")
        # FAPI 2.0 SP 5.3.2.1: the issuer is the audience of every client assertion, PS256/ES256 only; the reference
        # IdP accepts it. RFC 9449 10: the pushed request names bff's DPoP key, which the code is then bound to.
        for _, form in world.transport.posts:
            header, claims = jwt_parts(form["client_assertion"])
            assert (header["alg"], claims["aud"]) == ("ES256", world.idp.url)
        assert (
            world.transport.posts[0][1]["dpop_jkt"]
            == ECKey.import_key((tmp_path / "dpop.pem").read_bytes()).thumbprint()
        )


@pytest.mark.parametrize(
    ("idp", "missing"),
    [
        ({"par": False}, ["no pushed_authorization_request_endpoint"]),
        ({"iss_parameter": False}, ["authorization_response_iss_parameter_supported"]),
        (
            {"par": False, "iss_parameter": False},
            ["no pushed_authorization_request_endpoint", "authorization_response_iss_parameter_supported"],
        ),
    ],
)
async def test_fapi2_refuses_an_idp_that_lacks_a_capability(
    tmp_path: Path, idp: dict[str, Any], missing: list[str]
) -> None:
    with running_world(tmp_path, idp=idp, oidc=fapi2_oidc(tmp_path), signed=True, start_bff=False) as world:
        app = BffApp(make_config(world.doc), store=MemoryStore())
        with pytest.raises(ConfigError) as caught:
            async with app.lifespan():
                pass
        assert not app.idp.ready
    assert len(caught.value.problems) == len(missing), caught.value.problems
    for problem, text in zip(caught.value.problems, missing, strict=True):
        assert text in problem


def test_fapi2_refuses_client_secrets_and_unbound_tokens_at_config_check() -> None:
    doc = base_document()
    doc["oidc"]["profile"] = "fapi2"
    with pytest.raises(ConfigError) as caught:
        make_config(doc)
    text = "\n".join(caught.value.problems)
    assert "oidc.token_endpoint_auth_method: client_secret_basic is refused by profile = 'fapi2'" in text
    assert "oidc.dpop: profile = 'fapi2' needs sender-constrained tokens" in text
    doc["oidc"].update(par="off", id_token_signing_algs=["RS256"])
    with pytest.raises(ConfigError) as caught:
        make_config(doc)
    text = "\n".join(caught.value.problems)
    assert "oidc.par: must not be 'off'" in text
    assert "oidc.id_token_signing_algs[0]: is refused by profile = 'fapi2'" in text


def write_fapi2_config(tmp_path: Path, issuer: str, key_file: Path) -> Path:
    """A ``bff serve`` config file: profile fapi2 with private_key_jwt and DPoP, for ``issuer``, on a free port."""
    port = free_port()
    config = tmp_path / "bff.toml"
    config.write_text(
        f"""
[server]
listen = "127.0.0.1:{port}"
public_origin = "http://127.0.0.1:{port}"
[session]
store = "memory://"
keys = ["{"k" * 40}"]
[oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
token_endpoint_auth_method = "private_key_jwt"
private_key_file = "{key_file}"
profile = "fapi2"
dpop = true
dpop_key_file = "{dpop_key(tmp_path)}"
timeout = "2s"
"""
    )
    return config


def test_bff_check_and_serve_refuse_a_fapi2_idp_without_par(tmp_path: Path) -> None:
    key_file, jwks = client_key(tmp_path)
    registration = ClientRegistration(
        CLIENT_ID,
        SECRET,
        redirect_uris=("http://127.0.0.1:1/bff/callback",),
        token_endpoint_auth_method="private_key_jwt",
        jwks=jwks,
    )
    with running_devidp(tmp_path, (registration,), par=False) as idp:
        config = write_fapi2_config(tmp_path, idp.url, key_file)
        for command in ("check", "serve"):
            done = subprocess.run(
                [sys.executable, "-m", "bff", command, "--config", str(config)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            output = done.stdout + done.stderr
            assert done.returncode == 2, output
            assert "no pushed_authorization_request_endpoint (PAR, RFC 9126), which profile = 'fapi2'" in output
            assert output.count("pushed_authorization_request_endpoint") == 1, "once, one line per missing capability"
            assert "Traceback" not in output


def test_bff_check_only_warns_when_the_idp_cannot_be_reached(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``bff serve`` waits for an IdP that is down; ``bff check`` says the metadata was not checked and passes."""
    from bff.cli import main

    key_file, _ = client_key(tmp_path)
    config = write_fapi2_config(tmp_path, f"http://127.0.0.1:{free_port()}", key_file)
    assert main(["check", "--config", str(config)]) == 0
    captured = capsys.readouterr()
    assert "warning: the identity provider's metadata was not checked" in captured.err
    assert ": OK" in captured.out


async def test_an_idp_that_comes_up_without_par_leaves_a_fapi2_bff_not_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The IdP is down when bff starts (bff starts and retries); when it answers, its metadata lacks PAR: bff logs
    the refusal and stays not ready (503 not_ready) instead of serving logins the profile forbids."""
    from bff.errors import IdPUnavailable
    from bff.oidc.discovery import fetch_metadata as real

    calls: list[str] = []

    async def down_once(http: httpx.AsyncClient, issuer: str) -> Any:
        calls.append(issuer)
        if len(calls) == 1:
            raise IdPUnavailable("OpenID Provider metadata: cannot fetch (ConnectError)")
        return await real(http, issuer)

    monkeypatch.setattr("bff.oidc.provider.fetch_metadata", down_once)
    with running_world(tmp_path, idp={"par": False}, oidc=fapi2_oidc(tmp_path), signed=True, start_bff=False) as world:
        app = BffApp(make_config(world.doc), store=MemoryStore())
        async with app.lifespan():
            retry = app._retry
            assert retry is not None, "the first failure is retried in the background"
            await asyncio.wait_for(retry, 10)
            assert len(calls) == 2
            assert not app.idp.ready
    assert "no pushed_authorization_request_endpoint" in caplog.text
