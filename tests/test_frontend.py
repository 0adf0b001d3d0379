"""The SPA's files through bff: ``[frontend] directory`` (static files, fallback, cache and security headers, no
way out of the directory) and ``[frontend] dev_server`` (HTTP and WebSocket relay, credentials never forwarded).

Everything runs as real servers on loopback: bff (with a test IdP), a dev-server stand-in, a temporary directory.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from bff.frontend.static import IMMUTABLE, NO_CACHE, SHORT, cache_control, is_fingerprinted
from tests.proxy.conftest import raw_request
from tests.support.dev_server import DevServer, DevServerState
from tests.support.servers import free_port, serve
from tests.support.stack import running_stack

INDEX = b"<!doctype html><title>spa</title><script src=/assets/app.3f2a9c1b.js></script>"
SECRET = b"top secret, outside the directory"
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
BOUND = 10


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("frontend")
    (base / "secret.txt").write_bytes(SECRET)
    root = base / "dist"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_bytes(INDEX)
    (root / "assets" / "app.3f2a9c1b.js").write_bytes(b"console.log('app')")
    (root / "logo.png").write_bytes(b"\x89PNG not really")
    (root / ".env").write_bytes(b"SECRET=1")
    (root / ".well-known").mkdir()
    (root / ".well-known" / "security.txt").write_bytes(b"Contact: mailto:security@example.com")
    (root / "docs").mkdir()
    (root / "docs" / "index.html").write_bytes(b"<p>docs</p>")
    os.symlink(base / "secret.txt", root / "leak.txt")
    os.symlink(base, root / "up")
    os.symlink("/etc", root / "etc")
    os.symlink(root / "assets" / "app.3f2a9c1b.js", root / "alias.js")
    return root


def _frontend(**frontend: str) -> Any:
    def customize(doc: dict[str, Any]) -> None:
        doc["frontend"] = frontend
        doc["routes"] = [{"path": "/api", "upstream": f"http://127.0.0.1:{free_port()}", "token": "user"}]

    return customize


@pytest.fixture(scope="module")
def static_url(site: Path) -> Iterator[str]:
    with running_stack(customize=_frontend(directory=str(site))) as stack:
        yield stack.url


@pytest.fixture(scope="module")
def dev() -> Iterator[tuple[str, DevServerState]]:
    state = DevServerState()
    with serve(DevServer(state), lifespan="off") as url:
        yield url, state


@pytest.fixture(scope="module")
def dev_url(dev: tuple[str, DevServerState]) -> Iterator[str]:
    with running_stack(customize=_frontend(dev_server=dev[0])) as stack:
        yield stack.url


@pytest.fixture
def state(dev: tuple[str, DevServerState]) -> DevServerState:
    dev[1].reset()
    return dev[1]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=BOUND) as client:
        yield client


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


# --- static files ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fingerprinted"),
    [
        ("app.3f2a9c1b.js", True),
        ("index-Bd3XfTaK.css", True),
        ("main.8a7f3d2e.chunk.js", True),
        ("chunk.deadbeefcafe.js", True),
        ("app.js", False),
        ("my-component.js", False),
        ("jquery-3.7.1.min.js", False),
        ("logo.png", False),
    ],
)
def test_fingerprint_detection(name: str, fingerprinted: bool) -> None:
    assert is_fingerprinted(name) is fingerprinted
    assert cache_control(name) == (IMMUTABLE if fingerprinted else SHORT)


async def test_index_is_never_cached_and_carries_security_headers(static_url: str, http: httpx.AsyncClient) -> None:
    response = await http.get(static_url + "/", headers=HTML)
    assert response.status_code == 200
    assert response.content == INDEX
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == NO_CACHE
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "same-origin"
    assert response.headers["x-frame-options"] == "DENY"
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "etag" in response.headers


@pytest.mark.parametrize("route", ["/orders", "/orders/7", "/orders/7/", "/etc/passwd"])
async def test_client_side_routes_get_index_html(static_url: str, http: httpx.AsyncClient, route: str) -> None:
    response = await http.get(static_url + route, headers=HTML)
    assert response.status_code == 200
    assert response.content == INDEX
    assert response.headers["cache-control"] == NO_CACHE


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/app.js", HTML),  # a missing asset is never HTML the browser would try to run
        ("/orders/7.json", HTML),
        ("/orders/7", {"Accept": "application/json"}),  # not a navigation
        ("/orders/7", {"Accept": "*/*"}),
    ],
)
async def test_misses_that_are_not_navigations_are_404(
    static_url: str, http: httpx.AsyncClient, path: str, headers: dict[str, str]
) -> None:
    response = await http.get(static_url + path, headers=headers)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


async def test_assets_cache_policy_and_types(static_url: str, http: httpx.AsyncClient) -> None:
    fingerprinted = await http.get(static_url + "/assets/app.3f2a9c1b.js")
    assert fingerprinted.status_code == 200
    assert fingerprinted.headers["cache-control"] == IMMUTABLE
    assert fingerprinted.headers["content-type"].startswith("text/javascript")
    assert fingerprinted.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in fingerprinted.headers
    plain = await http.get(static_url + "/logo.png")
    assert plain.headers["cache-control"] == SHORT
    assert plain.headers["content-type"] == "image/png"
    assert plain.headers["etag"]
    assert plain.headers["last-modified"]


async def test_revalidation_answers_304(static_url: str, http: httpx.AsyncClient, site: Path) -> None:
    first = await http.get(static_url + "/logo.png")
    etag = first.headers["etag"]
    by_etag = await http.get(static_url + "/logo.png", headers={"If-None-Match": etag})
    assert by_etag.status_code == 304
    assert by_etag.content == b""
    assert by_etag.headers["etag"] == etag
    assert by_etag.headers["cache-control"] == SHORT
    other_etag = await http.get(static_url + "/logo.png", headers={"If-None-Match": '"something-else"'})
    assert other_etag.status_code == 200
    later = formatdate((site / "logo.png").stat().st_mtime + 60, usegmt=True)
    earlier = formatdate((site / "logo.png").stat().st_mtime - 60, usegmt=True)
    assert (await http.get(static_url + "/logo.png", headers={"If-Modified-Since": later})).status_code == 304
    assert (await http.get(static_url + "/logo.png", headers={"If-Modified-Since": earlier})).status_code == 200


async def test_head_and_other_methods(static_url: str, http: httpx.AsyncClient) -> None:
    head = await http.head(static_url + "/", headers=HTML)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(INDEX))
    post = await http.post(static_url + "/orders", headers=HTML)
    assert post.status_code == 405
    assert post.headers["allow"] == "GET, HEAD"


async def test_directories_dotfiles_and_well_known(static_url: str, http: httpx.AsyncClient) -> None:
    assert (await http.get(static_url + "/docs/")).content == b"<p>docs</p>"
    assert (await http.get(static_url + "/.env")).status_code == 404
    assert (await http.get(static_url + "/.well-known/security.txt")).status_code == 200


@pytest.mark.parametrize(
    "target",
    [
        b"/../secret.txt",
        b"/assets/../../secret.txt",
        b"/%2e%2e/secret.txt",
        b"/%2E%2E/%2e%2e/secret.txt",
        b"/assets/.%2e/.%2e/secret.txt",
        b"/..%2fsecret.txt",
        b"/assets%2F..%2F..%2Fsecret.txt",
        b"/..%5csecret.txt",
        b"/%5c..%5csecret.txt",
        b"//etc/passwd",
        b"/%00/secret.txt",
        b"/%ff%fe",
    ],
)
def test_traversal_is_refused(static_url: str, target: bytes) -> None:
    response = raw_request(static_url, target, headers=(b"Accept: text/html",))
    assert response.status == 400
    assert json.loads(response.body)["error"] == "invalid_path"
    assert SECRET not in response.body


@pytest.mark.parametrize("target", [b"/leak.txt", b"/up/secret.txt", b"/etc/hostname", b"/etc/passwd"])
def test_symlinks_out_of_the_directory_are_not_followed(static_url: str, target: bytes) -> None:
    response = raw_request(static_url, target, headers=(b"Accept: */*",))
    assert response.status == 404
    assert SECRET not in response.body


async def test_symlinks_within_the_directory_work(static_url: str, http: httpx.AsyncClient) -> None:
    response = await http.get(static_url + "/alias.js")
    assert response.status_code == 200
    assert response.content == b"console.log('app')"


async def test_bff_paths_and_routes_win_over_the_frontend(static_url: str, http: httpx.AsyncClient) -> None:
    user = await http.get(static_url + "/bff/user", headers=HTML)
    assert (user.status_code, user.json()["error"]) == (401, "csrf")
    api = await http.get(static_url + "/api/orders", headers={**HTML, "X-CSRF": "1"})
    assert (api.status_code, api.json()["error"]) == (401, "unauthenticated")
    assert (await http.get(static_url + "/healthz", headers=HTML)).json() == {"status": "ok"}


async def test_websockets_are_refused_by_the_static_frontend(static_url: str, session: aiohttp.ClientSession) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(static_url + "/")
    assert refused.value.status == 403


# --- dev server -----------------------------------------------------------------------------------------------------

CREDENTIALS = {"Cookie": "__Host-bff=session-handle; other=1", "Authorization": "Bearer must-not-leak"}


def _names(headers: list[list[str]]) -> set[str]:
    return {name for name, _ in headers}


async def test_dev_server_http_relay(dev_url: str, http: httpx.AsyncClient, state: DevServerState) -> None:
    response = await http.get(
        dev_url + "/@vite/client?t=1", headers={**CREDENTIALS, "X-CSRF": "1", "Accept": "*/*", "X-Custom": "kept"}
    )
    assert response.status_code == 200
    seen = response.json()
    assert (seen["method"], seen["path"], seen["query"]) == ("GET", "/@vite/client", "t=1")
    names = _names(seen["headers"])
    assert "x-custom" in names
    assert not names & {"cookie", "authorization", "x-csrf"}
    assert response.headers["x-dev"] == "yes"
    assert "set-cookie" not in response.headers
    posted = await http.post(dev_url + "/upload", content=b"payload", headers=CREDENTIALS)
    assert posted.json()["body"] == "payload"
    assert state.requests == 2


async def test_dev_server_is_not_asked_for_bff_paths(
    dev_url: str, http: httpx.AsyncClient, state: DevServerState
) -> None:
    assert (await http.get(dev_url + "/bff/user")).json()["error"] == "csrf"
    assert (await http.get(dev_url + "/api/x", headers={"X-CSRF": "1"})).json()["error"] == "unauthenticated"
    assert state.requests == 0


async def test_dev_server_event_stream_ends_when_the_browser_leaves(dev_url: str, state: DevServerState) -> None:
    async with httpx.AsyncClient(timeout=BOUND) as client, client.stream("GET", dev_url + "/events") as response:
        assert response.headers["content-type"] == "text/event-stream"
        chunks = response.aiter_bytes()
        assert (await anext(chunks)).startswith(b"data: 0")
    assert await asyncio.to_thread(state.events_closed.wait, BOUND)


async def test_websocket_through_bff(dev_url: str, session: aiohttp.ClientSession, state: DevServerState) -> None:
    async with session.ws_connect(dev_url + "/?token=abc", protocols=("vite-hmr",), headers=CREDENTIALS) as ws:
        assert ws.protocol == "vite-hmr"
        handshake = json.loads(await asyncio.wait_for(ws.receive_str(), BOUND))
        assert (handshake["path"], handshake["query"], handshake["subprotocols"]) == ("/", "token=abc", ["vite-hmr"])
        assert not _names(handshake["headers"]) & {"cookie", "authorization"}
        await ws.send_str("hello")
        assert await asyncio.wait_for(ws.receive_str(), BOUND) == "echo:hello"
        await ws.send_bytes(b"\x00\x01binary")
        assert await asyncio.wait_for(ws.receive_bytes(), BOUND) == b"\x00\x01binary"
        await ws.close(code=4001)
    assert await asyncio.to_thread(state.ws_closed.wait, BOUND)
    assert state.ws_close_codes == [4001]


async def test_websocket_closed_by_the_dev_server(dev_url: str, session: aiohttp.ClientSession) -> None:
    async with session.ws_connect(dev_url + "/") as ws:
        await asyncio.wait_for(ws.receive_str(), BOUND)
        await ws.send_str("close:4000")
        message = await asyncio.wait_for(ws.receive(), BOUND)
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 4000


async def test_websocket_on_a_route_prefix_is_refused(dev_url: str, session: aiohttp.ClientSession) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(dev_url + "/api/socket")
    assert refused.value.status == 403


async def test_dev_server_down(http: httpx.AsyncClient, session: aiohttp.ClientSession) -> None:
    with running_stack(customize=_frontend(dev_server=f"http://127.0.0.1:{free_port()}")) as stack:
        response = await http.get(stack.url + "/", headers=HTML)
        assert (response.status_code, response.json()["error"]) == (502, "bad_gateway")
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(stack.url + "/")
        assert refused.value.status == 403
