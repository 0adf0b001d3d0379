"""Path safety: a request target that could escape its route or reach another host is refused before any upstream call.

Each attack is tried twice. At the ASGI seam, with ``raw_path`` exactly as a server may hand it over (uvicorn's
h11 protocol passes an absolute-form target or raw octets through; httptools refuses or normalises some first).
And over the wire against the real server, byte for byte on a socket (httpx would normalise the target). Either
way the echo upstream counts what reached it, and it must be nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

from bff.config import RouteSettings
from bff.proxy import Proxy
from bff.types import Message
from bff.upstream import UpstreamClient
from tests.proxy.conftest import PUBLIC_ORIGIN, StubBearer, Upstream, raw_request

# Targets that reach the app over HTTP/1.1 on uvicorn (httptools) and that bff itself must refuse.
REFUSED_BY_BFF = [
    b"/api/echo/../admin",
    b"/api/echo/..",
    b"/api/echo/./x",
    b"/api/echo/x/.",
    b"/api/../api/echo/x",
    b"/api/echo/%2e%2e/admin",
    b"/api/echo/%2E%2e/admin",
    b"/api/echo/.%2e/admin",
    b"/api/echo/%2e./admin",
    b"/api/echo/%252e%252e/admin",
    b"/api/echo/..%2fadmin",
    b"/api/echo%2f..%2fadmin",
    b"/api/echo/x/..%2f..%2f..%2fetc/passwd",
    b"/api/echo/%2F",
    b"/api/echo/%252f",
    b"/api/echo/%25",
    b"/api/echo/%5c..%5cadmin",
    b"/api/echo/%5C",
    b"/api/echo/..;/admin",
    b"/api/echo;jsessionid=abc/x",
    b"/api/echo/x;jsessionid=abc",
    b"/api/echo/%3b/x",
    b"/api/echo\\..\\admin",
    b"/api/echo/x\\y",
    b"/api/echo/@evil.example",
    b"/api/echo//evil.example/x",
    b"//evil.example/api/echo",
    b"/api/echo/%00",
    b"/api/echo/x%00.json",
    b"/api/echo/%0d%0aX-Injected:%201",
    b"/api/echo/%1f",
    b"/api/echo/%7F",
    b"/api/echo/%zz",
    b"/api/echo/%2",
    b"/api/echo/%",
    b'/api/echo/"quoted"',
    b"/api/echo/<script>",
    b"/api/echo/{x}",
    b"*",
]
# Targets the HTTP server refuses itself (raw control octets, spaces, non-ASCII) but another server might pass on.
REFUSED_BY_SERVER = [
    b"/api/echo/\x00",
    b"/api/echo/\x01",
    b"/api/echo/\x7f",
    b"/api/echo/a\tb",
    b"/api/echo/a b",
    b"/api/echo/\xc3\xa9",
    b"/api/echo/x?a=\x01",
]
# What only the ASGI seam can show: an absolute-form target (h11 puts it in raw_path) and a relative one.
REFUSED_AT_SEAM = [b"http://evil.example/api/echo/x", b"https://evil.example/", b"api/echo/x", b"evil.example/api"]


@pytest.fixture
async def direct_proxy(upstream: Upstream) -> AsyncIterator[Proxy]:
    client = UpstreamClient()
    routes = [RouteSettings(path="/api/echo", upstream=f"{upstream.url}/echo")]
    yield Proxy(routes, client, StubBearer(), public_origin=PUBLIC_ORIGIN, trusted_proxies=())
    await client.aclose()


async def call(proxy: Proxy, raw_path: bytes, query: bytes = b"") -> tuple[int, dict[str, str]]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": raw_path.decode("latin-1"),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"bff.test"), (b"x-csrf", b"1")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[Message] = []
    requested = False

    async def receive() -> Message:
        nonlocal requested
        if requested:  # like a server: after the body, nothing until the browser disconnects
            await asyncio.Event().wait()
        requested = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await proxy(scope, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"])


@pytest.mark.parametrize("target", REFUSED_BY_BFF + REFUSED_BY_SERVER + REFUSED_AT_SEAM)
async def test_attack_refused_at_the_asgi_seam(direct_proxy: Proxy, upstream: Upstream, target: bytes) -> None:
    raw_path, _, query = target.partition(b"?")
    status, body = await call(direct_proxy, raw_path, query)
    assert (status, body["error"]) == (400, "invalid_path")
    assert upstream.state.seen == []


@pytest.mark.parametrize("query", [b"a=\r\nX-Injected: 1", b"a=\x00", b"a=b c", b"a=\xff", b"a=b#frag"])
async def test_unsafe_query_refused_at_the_asgi_seam(direct_proxy: Proxy, upstream: Upstream, query: bytes) -> None:
    status, body = await call(direct_proxy, b"/api/echo/x", query)
    assert (status, body["error"]) == (400, "invalid_path")
    assert upstream.state.seen == []


async def test_a_safe_path_reaches_the_upstream_at_the_seam(direct_proxy: Proxy, upstream: Upstream) -> None:
    status, body = await call(direct_proxy, b"/api/echo/a.b/..c/c../%2D/%C3%A9", b"x=%2e%2e")
    assert status == 200
    assert (body["raw_path"], body["query_string"]) == ("/echo/a.b/..c/c../%2D/%C3%A9", "x=%2e%2e")
    assert len(upstream.state.seen) == 1


@pytest.mark.parametrize("target", REFUSED_BY_BFF)
def test_attack_refused_over_the_wire(proxy_url: str, upstream: Upstream, target: bytes) -> None:
    response = raw_request(proxy_url, target)
    assert response.status == 400, response.body
    assert json.loads(response.body)["error"] == "invalid_path"
    assert upstream.state.seen == []


@pytest.mark.parametrize("target", REFUSED_BY_SERVER)
def test_malformed_target_refused_over_the_wire(proxy_url: str, upstream: Upstream, target: bytes) -> None:
    assert raw_request(proxy_url, target).status == 400
    assert upstream.state.seen == []


def test_absolute_form_cannot_change_the_upstream_host(proxy_url: str, upstream: Upstream) -> None:
    # httptools keeps only the path of an absolute-form target (RFC 9112 3.2.2: the authority replaces Host);
    # whichever way the server goes, the request may only ever reach the route's configured upstream.
    response = raw_request(proxy_url, b"http://evil.example/api/echo/x")
    if response.status == 400:
        assert json.loads(response.body)["error"] == "invalid_path"
        assert upstream.state.seen == []
    else:
        echoed = json.loads(response.body)
        assert echoed["raw_path"] == "/echo/x"
        assert dict(echoed["headers"])["host"] == urlsplit(upstream.url).netloc
