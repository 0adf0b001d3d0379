"""DPoP end to end (RFC 9449), all real servers on loopback: the reference IdP binds tokens to bff's key, the demo
API verifies a proof per request, bff signs them. Nonce challenges from the IdP and from the API are answered with
exactly one retry, and the nonce is remembered for the next request; a refresh keeps the binding; a route that says
``dpop = false`` still sends a plain bearer token and no proof."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from joserfc.jwk import ECKey

from bff.app import BffApp
from bff.session.memory_store import MemoryStore
from bff.types import ASGIApp, Receive, Scope, Send
from bff_devtools.demo.api import DemoApiSettings, create_demo_api
from bff_devtools.devidp import ClientRegistration
from tests.support.bff_process import wait_ready
from tests.support.browser import Browser
from tests.support.configs import SESSION_KEY, base_document, make_config
from tests.support.devidp import IdP, running_devidp, sign_in_through_form
from tests.support.leak_guard import GUARD
from tests.support.servers import serve
from tests.support.stack import bound_socket

XHR = {"X-CSRF": "1"}
SECRET = "bff-dpop-client-secret-0123456789"


@dataclass
class Counter:
    """Requests one server received, by path, and what a plain upstream saw of its authorization."""

    paths: list[str] = field(default_factory=list)
    schemes: list[str] = field(default_factory=list)
    header_names: list[set[str]] = field(default_factory=list)

    def count(self, path: str) -> int:
        return sum(1 for p in self.paths if p == path)


def counting(app: ASGIApp, counter: Counter) -> ASGIApp:
    async def wrapper(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            counter.paths.append(scope["path"])
        await app(scope, receive, send)

    return wrapper


def plain_upstream(counter: Counter) -> ASGIApp:
    """Records the authorization scheme and header names (never a token) and answers 200."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        counter.schemes.append(headers.get("authorization", "").partition(" ")[0])
        counter.header_names.append(set(headers))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


class CountingTransport(httpx.AsyncBaseTransport):
    """bff's transport to the IdP: the status of each answer of the token and PAR endpoints."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.token_statuses: list[int] = []
        self.par_statuses: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if request.url.path == "/token":
            self.token_statuses.append(response.status_code)
        elif request.url.path == "/par":
            self.par_statuses.append(response.status_code)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass
class World:
    idp: IdP
    bff: str
    app: BffApp
    api: Counter
    plain: Counter
    idp_transport: CountingTransport


def write_key(path: Path) -> Path:
    path.write_bytes(ECKey.generate_key("P-256", private=True).as_pem(private=True))
    return path


@contextlib.contextmanager
def dpop_world(
    tmp_path: Path, *, idp_nonce: bool = False, api_nonce: bool = False, ttl: float = 900
) -> Iterator[World]:
    sock = bound_socket()
    origin = f"http://127.0.0.1:{sock.getsockname()[1]}"
    registration = ClientRegistration(
        "bff-dpop", SECRET, redirect_uris=(f"{origin}/bff/callback",), post_logout_redirect_uris=(f"{origin}/",)
    )
    api, plain = Counter(), Counter()
    with contextlib.ExitStack() as stack:
        idp = stack.enter_context(running_devidp(tmp_path, (registration,), access_token_ttl=ttl, dpop_nonce=idp_nonce))
        demo = create_demo_api(DemoApiSettings(issuer=idp.url, dpop_nonce=api_nonce))
        api_url = stack.enter_context(serve(counting(demo, api)))
        plain_url = stack.enter_context(serve(plain_upstream(plain)))
        doc = base_document(public_origin=origin, issuer=idp.url)
        doc["oidc"].update(
            client_id="bff-dpop", client_secret=SECRET, dpop=True, dpop_key_file=str(write_key(tmp_path / "dpop.pem"))
        )
        doc["routes"] = [
            {"path": "/api", "upstream": api_url, "token": "user"},
            {"path": "/plain", "upstream": plain_url, "token": "user", "dpop": False},
        ]
        doc["tokens"] = {"refresh_leeway": "1s"}
        transport = CountingTransport()
        app = BffApp(make_config(doc), store=MemoryStore(), idp_transport=transport)
        url = stack.enter_context(serve(app, sock=sock))
        yield World(idp, url, app, api, plain, transport)


async def test_login_and_api_calls_with_dpop(tmp_path: Path, browser: Browser) -> None:
    with dpop_world(tmp_path) as world:
        hops = await sign_in_through_form(browser, world.bff)
        assert hops[-1].status_code in (200, 302, 404), hops[-1].text
        assert world.idp_transport.token_statuses == [200]  # no nonce demanded: no retry
        for _ in range(3):  # a fresh proof each time: the API's jti replay cache would refuse a second use
            response = await browser.request("GET", f"{world.bff}/api/me", headers=XHR)
            assert response.status_code == 200, response.text
            assert response.json()["sub"]
        assert world.api.count("/me") == 3


async def test_a_route_without_dpop_sends_a_bearer_token_and_no_proof(tmp_path: Path, browser: Browser) -> None:
    with dpop_world(tmp_path) as world:
        await sign_in_through_form(browser, world.bff)
        response = await browser.request("GET", f"{world.bff}/plain/x", headers={**XHR, "DPoP": "a-browser-made-proof"})
        assert response.status_code == 200, response.text
        assert world.plain.schemes == ["Bearer"]
        # The browser's own DPoP header is dropped on DPoP routes only; here it is the SPA's business.
        assert "dpop" in world.plain.header_names[0]
        response = await browser.request("GET", f"{world.bff}/api/me", headers={**XHR, "DPoP": "browser-proof"})
        assert response.status_code == 200, "the browser's DPoP header never replaces bff's proof"


async def test_the_idp_nonce_challenge_costs_one_retry_then_is_remembered(tmp_path: Path, browser: Browser) -> None:
    with dpop_world(tmp_path, idp_nonce=True, ttl=2) as world:
        await sign_in_through_form(browser, world.bff)
        # The login's first IdP call is the pushed request (RFC 9126, with a proof: RFC 9449 10.1): use_dpop_nonce,
        # then the retry with the nonce; the token request already carries it.
        assert world.idp_transport.par_statuses == [400, 201]
        assert world.idp_transport.token_statuses == [200]
        await asyncio.sleep(1.5)  # the 2 s token is now within the 1 s refresh leeway
        response = await browser.request("GET", f"{world.bff}/api/me", headers=XHR)
        assert response.status_code == 200, response.text
        assert world.app.tokens.refresh_count == 1
        # The refresh used the remembered nonce: no second challenge, and the refreshed token is bound too
        # (the API accepted it with a proof of bff's key).
        assert world.idp_transport.token_statuses == [200, 200]


async def test_the_upstream_nonce_challenge_costs_one_retry_then_is_remembered(
    tmp_path: Path, browser: Browser
) -> None:
    with dpop_world(tmp_path, api_nonce=True) as world:
        await sign_in_through_form(browser, world.bff)
        first = await browser.request("GET", f"{world.bff}/api/me", headers=XHR)
        assert first.status_code == 200, first.text
        assert world.api.count("/me") == 2  # 401 use_dpop_nonce, then one retry
        second = await browser.request("GET", f"{world.bff}/api/items", headers=XHR)
        assert second.status_code == 200, second.text
        assert world.api.count("/items") == 1  # the nonce was remembered for the API's origin


async def test_refresh_keeps_the_dpop_binding(tmp_path: Path, browser: Browser) -> None:
    with dpop_world(tmp_path, ttl=2) as world:
        await sign_in_through_form(browser, world.bff)
        for _ in range(2):
            await asyncio.sleep(1.5)
            response = await browser.request("GET", f"{world.bff}/api/me", headers=XHR)
            assert response.status_code == 200, response.text
        assert world.app.tokens.refresh_count == 2
        assert world.idp_transport.token_statuses == [200, 200, 200]


@pytest.mark.parametrize("answer", ["Bearer"])
def test_config_is_checked(answer: str, tmp_path: Path) -> None:
    from bff.errors import ConfigError

    doc: dict[str, Any] = base_document()
    doc["oidc"]["dpop"] = True
    with pytest.raises(ConfigError, match="dpop_key_file: is required"):
        make_config(doc)
    doc = base_document()
    doc["routes"][0]["dpop"] = True
    with pytest.raises(ConfigError, match=r"routes\[0\].dpop: needs \[oidc\] dpop"):
        make_config(doc)
    doc = base_document()
    doc["oidc"].update(dpop=True, dpop_key_file=str(write_key(tmp_path / "k.pem")))
    doc["routes"][0].update(token="none", dpop=True)
    with pytest.raises(ConfigError, match="needs a token to bind"):
        make_config(doc)
    doc["routes"][0]["set_headers"] = {"DPoP": "x"}
    doc["routes"][0].pop("dpop")
    with pytest.raises(ConfigError, match="DPoP is managed by bff"):
        make_config(doc)


def serve_two_workers(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        command = [sys.executable, "-m", "bff", "serve", "--config", str(config), "--workers", "2"]
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


async def test_bff_serve_with_two_workers_signs_with_the_one_key_file(
    tmp_path: Path, browser: Browser, redis_url: str
) -> None:
    """``bff serve --workers 2`` as a real process tree, nonces demanded by both the IdP and the API: whichever
    worker serves a call, its proof is signed with the key the token is bound to, and each worker pays at most one
    nonce retry before it remembers the API's nonce."""
    sock = bound_socket()
    port = sock.getsockname()[1]
    sock.close()  # bff serve binds it itself
    origin = f"http://127.0.0.1:{port}"
    registration = ClientRegistration(
        "bff-dpop", SECRET, redirect_uris=(f"{origin}/bff/callback",), post_logout_redirect_uris=(f"{origin}/",)
    )
    api = Counter()
    key = write_key(tmp_path / "dpop.pem")
    with contextlib.ExitStack() as stack:
        idp = stack.enter_context(running_devidp(tmp_path, (registration,), redis_url=redis_url, dpop_nonce=True))
        demo = create_demo_api(DemoApiSettings(issuer=idp.url, dpop_nonce=True))
        api_url = stack.enter_context(serve(counting(demo, api)))
        config = tmp_path / "bff.toml"
        config.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
public_origin = "{origin}"

[session]
store = "{redis_url}"
keys = ["{SESSION_KEY}"]

[oidc]
issuer = "{idp.url}"
client_id = "bff-dpop"
client_secret = "{SECRET}"
dpop = true
dpop_key_file = "{key}"

[[routes]]
path = "/api"
upstream = "{api_url}"
""")
        log = tmp_path / "bff.log"
        GUARD.watch_bff(origin)
        process = serve_two_workers(config, log)
        stack.callback(process.wait, 10)
        stack.callback(process.terminate)
        wait_ready(port, process, log)
        await sign_in_through_form(browser, origin)
        calls = 12
        for _ in range(calls):
            async with httpx.AsyncClient() as fresh:  # a new connection each time: either worker may accept it
                cookies = "; ".join(f"{k}={v}" for k, v in browser.cookies(origin).items())
                response = await fresh.get(f"{origin}/api/me", headers={**XHR, "Cookie": cookies})
            assert response.status_code == 200, response.text
        assert calls + 1 <= api.count("/me") <= calls + 2  # one nonce retry per worker at most


async def test_a_session_from_before_dpop_gets_a_bound_token_before_its_first_dpop_call(
    tmp_path: Path, browser: Browser, redis_url: str
) -> None:
    """bff restarted with ``dpop = true`` on the same store: a session still holding an unbound Bearer token is
    refreshed first (the API refuses an unbound token with a proof), so the browser sees no failure."""
    sock = bound_socket()
    port = sock.getsockname()[1]
    origin = f"http://127.0.0.1:{port}"
    registration = ClientRegistration(
        "bff-dpop", SECRET, redirect_uris=(f"{origin}/bff/callback",), post_logout_redirect_uris=(f"{origin}/",)
    )
    prefix = f"dpop-{uuid4().hex}:"  # the suite shares one Redis
    with contextlib.ExitStack() as stack:
        idp = stack.enter_context(running_devidp(tmp_path, (registration,)))
        api_url = stack.enter_context(serve(create_demo_api(DemoApiSettings(issuer=idp.url))))

        def app(dpop: bool) -> BffApp:
            doc = base_document(public_origin=origin, issuer=idp.url, store=redis_url)
            doc["oidc"].update(client_id="bff-dpop", client_secret=SECRET)
            if dpop:
                doc["oidc"].update(dpop=True, dpop_key_file=str(write_key(tmp_path / "dpop.pem")))
            doc["routes"] = [{"path": "/api", "upstream": api_url, "token": "user"}]
            return BffApp(make_config(doc), store_prefix=prefix)

        before = app(dpop=False)
        with serve(before, sock=sock):
            await sign_in_through_form(browser, origin)
            assert (await browser.request("GET", f"{origin}/api/me", headers=XHR)).status_code == 200
        again = bound_socket_on(port)
        after = app(dpop=True)
        with serve(after, sock=again):
            response = await browser.request("GET", f"{origin}/api/me", headers=XHR)
            assert response.status_code == 200, response.text
            assert after.tokens.refresh_count == 1


def bound_socket_on(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock
