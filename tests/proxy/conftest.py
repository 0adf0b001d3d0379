"""Fixtures for the proxy tests: a real echo upstream and a real bff proxy on loopback, a stub token provider.

The upstream and the proxy run once per test module (each in its own uvicorn thread); ``reset`` clears what they
observed before every test. Tests that need another configuration start their own proxy with :func:`run_proxy`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from bff.config import RouteSettings
from bff.errors import BffError
from bff.proxy import Proxy
from bff.types import Receive, Scope, Send
from bff.upstream import UpstreamClient
from tests.support.echo_upstream import EchoState, EchoUpstream
from tests.support.servers import free_port, serve

PUBLIC_ORIGIN = "http://bff.test"
TOKEN = "t0-access-token"
MiB = 1024 * 1024


@dataclass
class StubBearer:
    """The proxy's token seam: hands out ``token`` (None for ``token = "none"`` routes) and counts the calls."""

    token: str = TOKEN
    fresh: str | None = "fresh"
    error: BffError | None = None
    refresh_error: BffError | None = None
    calls: int = 0
    refreshed: list[str] = field(default_factory=list)

    async def bearer(self, scope: Scope, route: RouteSettings) -> str | None:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return None if route.token == "none" else self.token

    async def refresh_bearer(self, scope: Scope, route: RouteSettings, rejected: str) -> str | None:
        self.refreshed.append(rejected)
        if self.refresh_error is not None:
            raise self.refresh_error
        return self.fresh

    def reset(self) -> None:
        self.token, self.fresh, self.error, self.refresh_error, self.calls = TOKEN, "fresh", None, None, 0
        self.refreshed.clear()


class ProxyApp:
    """The proxy as the app composition will run it: the UpstreamClient is closed at lifespan shutdown."""

    def __init__(self, proxy: Proxy, client: UpstreamClient) -> None:
        self.proxy = proxy
        self.client = client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await self.client.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return
        await self.proxy(scope, receive, send)


@dataclass
class Upstream:
    url: str
    state: EchoState


def error_marker(exc: BffError) -> list[tuple[bytes, bytes]]:
    return [(b"x-bff-error", exc.error.encode())]


def standard_routes(upstream: str) -> list[RouteSettings]:
    return [
        RouteSettings(path="/api/echo", upstream=f"{upstream}/echo"),
        RouteSettings(path="/api/echo/deep", upstream=f"{upstream}/deeper"),
        RouteSettings(path="/api/raw", upstream=upstream, strip_prefix=False),
        RouteSettings(path="/api/up", upstream=upstream),
        RouteSettings(path="/api/readonly", upstream=f"{upstream}/echo", methods=("GET", "HEAD")),
        RouteSettings(path="/api/small", upstream=f"{upstream}/echo", max_body=1024),
        RouteSettings(path="/api/big", upstream=f"{upstream}/echo", max_body=64 * MiB),
        RouteSettings(path="/api/slow", upstream=f"{upstream}/slow", timeout=0.3),
        RouteSettings(path="/api/plain401", upstream=f"{upstream}/protected", refresh_on_401=True),
        RouteSettings(path="/api/anon", upstream=f"{upstream}/echo", token="none"),
        RouteSettings(path="/api/anon-protected", upstream=f"{upstream}/protected", token="none"),
        RouteSettings(path="/api/down", upstream=f"http://127.0.0.1:{free_port()}"),
        RouteSettings(
            path="/api/headers",
            upstream=f"{upstream}/echo",
            set_headers={"X-Api-Key": "route-key", "X-Client-Version": "from-route"},
            remove_headers=("x-remove-me",),
        ),
    ]


@contextlib.contextmanager
def run_proxy(
    routes: Sequence[RouteSettings],
    bearer: StubBearer,
    *,
    trusted_proxies: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
    **kwargs: Any,
) -> Iterator[str]:
    client = UpstreamClient()
    proxy = Proxy(
        routes,
        client,
        bearer,
        public_origin=PUBLIC_ORIGIN,
        trusted_proxies=trusted_proxies,
        error_headers=error_marker,
        **kwargs,
    )
    # serve() runs bff serve's uvicorn settings: proxy_headers off, so bff alone judges X-Forwarded-* here too.
    with serve(ProxyApp(proxy, client), lifespan="on") as url:
        yield url


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)


def raw_request(
    base_url: str,
    target: bytes,
    *,
    method: bytes = b"GET",
    headers: Sequence[bytes] = (b"X-CSRF: 1",),
    body: bytes = b"",
) -> RawResponse:
    """One request written byte for byte on a socket (httpx would normalise the target), read until close."""
    host, port = base_url.removeprefix("http://").split(":")
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: bff.test", b"Connection: close", *headers]
    if body:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in header_lines)]
    return RawResponse(int(status_line.split()[1]), parsed, payload)


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    state = EchoState()
    with serve(EchoUpstream(state), lifespan="on") as url:
        yield Upstream(url, state)


@pytest.fixture(scope="module")
def bearer() -> StubBearer:
    return StubBearer()


@pytest.fixture(scope="module")
def proxy_url(upstream: Upstream, bearer: StubBearer) -> Iterator[str]:
    with run_proxy(standard_routes(upstream.url), bearer) as url:
        yield url


@pytest.fixture(autouse=True)
def _reset(request: pytest.FixtureRequest) -> None:
    for name in ("upstream", "bearer"):
        if name in request.fixturenames:
            target = request.getfixturevalue(name)
            (target.state if isinstance(target, Upstream) else target).reset()


@pytest.fixture
def client(proxy_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=proxy_url, headers={"X-CSRF": "1"}, timeout=10) as c:
        yield c
