"""Bodies stream through the proxy in both directions, and a browser that leaves takes the upstream request with it.

No assertion here is about speed. Streaming is proved by order (the upstream withholds event 2 until the client
has received event 1, which a buffering proxy can never deliver) and by memory (tracemalloc's peak stays far below
the 50 MiB that crossed the process); disconnects are proved by the upstream observing them within a bounded wait
long before its own work would have ended.
"""

from __future__ import annotations

import hashlib
import socket
import time
import tracemalloc
from collections.abc import Iterator

import httpx
import pytest

from bff.config import RouteSettings
from tests.proxy.conftest import MiB, StubBearer, Upstream, run_proxy
from tests.support.echo_upstream import CHUNK

BOUND = 5.0  # seconds a test waits for something that should happen at once; only a failure waits this long


def read_event(events: Iterator[bytes], buffer: bytearray) -> bytes:
    """The next complete SSE event from a raw byte stream."""
    while b"\n\n" not in buffer:
        buffer += next(events)
    event, _, rest = bytes(buffer).partition(b"\n\n")
    buffer[:] = rest
    return event


def test_sse_events_arrive_one_by_one(client: httpx.Client, upstream: Upstream) -> None:
    # The upstream sends event i only after the test opened gate i, i.e. after the client had event i - 1.
    with client.stream("GET", "/api/up/sse", params={"n": "4", "gated": "1"}, timeout=BOUND) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert "content-encoding" not in response.headers
        assert "content-length" not in response.headers
        events, buffer = response.iter_raw(), bytearray()
        for i in range(4):
            if i:
                upstream.state.gate(i).set()
            assert read_event(events, buffer) == f"data: {i}".encode()
        assert b"".join(events) == b""


@pytest.fixture
def traced() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def peak_mib() -> float:
    return tracemalloc.get_traced_memory()[1] / MiB


@pytest.mark.usefixtures("traced")
@pytest.mark.parametrize("with_length", [False, True])
def test_50_mib_upload_streams(client: httpx.Client, with_length: bool) -> None:
    size = 50 * MiB

    def body() -> Iterator[bytes]:
        for _ in range(size // len(CHUNK)):
            yield CHUNK

    headers = {"Content-Length": str(size)} if with_length else {}
    response = client.post("/api/big/upload", content=body(), headers=headers)
    echoed = response.json()
    expected = hashlib.sha256()
    for chunk in body():
        expected.update(chunk)
    assert (echoed["body_length"], echoed["body_sha256"]) == (size, expected.hexdigest())
    framing = {name: value for name, value in echoed["headers"] if name in ("content-length", "transfer-encoding")}
    assert framing == ({"content-length": str(size)} if with_length else {"transfer-encoding": "chunked"})
    # Client, proxy and upstream share this process: all of them together held a few chunks at a time.
    assert peak_mib() < 16, f"peak {peak_mib():.1f} MiB: something buffered the body"


@pytest.mark.usefixtures("traced")
@pytest.mark.parametrize("with_length", [False, True])
def test_50_mib_download_streams(client: httpx.Client, with_length: bool) -> None:
    digest, received = hashlib.sha256(), 0
    params = {"mib": "50", "length": "1" if with_length else "0"}
    with client.stream("GET", "/api/up/download", params=params) as response:
        assert response.status_code == 200
        assert ("content-length" in response.headers) is with_length
        for chunk in response.iter_raw():
            digest.update(chunk)
            received += len(chunk)
    expected = hashlib.sha256()
    for _ in range(50 * 16):
        expected.update(CHUNK)
    assert (received, digest.hexdigest()) == (50 * MiB, expected.hexdigest())
    assert peak_mib() < 16, f"peak {peak_mib():.1f} MiB: something buffered the body"


def test_browser_leaving_mid_sse_closes_the_upstream_stream(client: httpx.Client, upstream: Upstream) -> None:
    # The upstream would send its next event in 60 s: only the proxy noticing the disconnect ends it sooner.
    with client.stream("GET", "/api/up/sse", params={"n": "2", "interval": "60"}, timeout=BOUND) as response:
        assert read_event(response.iter_raw(), bytearray()) == b"data: 0"
    assert upstream.state.sse_closed.wait(BOUND)


def test_browser_leaving_while_the_upstream_thinks_abandons_it(proxy_url: str, upstream: Upstream) -> None:
    with (
        httpx.Client(base_url=proxy_url, headers={"X-CSRF": "1"}, timeout=0.5) as client,
        pytest.raises(httpx.ReadTimeout),
    ):
        client.get("/api/up/slow", params={"delay": "60"})
    assert upstream.state.slow_abandoned.wait(BOUND)


def test_browser_leaving_mid_upload_aborts_the_upstream_request(proxy_url: str, upstream: Upstream) -> None:
    host, port = proxy_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=BOUND) as sock:
        sock.sendall(
            b"POST /api/echo/x HTTP/1.1\r\nHost: bff.test\r\nX-CSRF: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n"
        )
        for _ in range(500):  # until the upstream has the request (at most BOUND seconds)
            if upstream.state.seen:
                break
            upstream.state.upload_aborted.wait(0.01)
        assert upstream.state.seen
    assert upstream.state.upload_aborted.wait(BOUND)
    assert upstream.state.bodies_completed == 0


def test_a_slow_upload_outlives_the_route_timeout_while_it_makes_progress(upstream: Upstream) -> None:
    """200 KiB paced over ~3 s through a real bff on a route whose timeout is 1 s: the timeout bounds idleness."""
    piece = b"p" * 10240
    routes = [RouteSettings(path="/api/paced", upstream=f"{upstream.url}/echo", timeout=1.0, max_body=MiB)]

    def paced() -> Iterator[bytes]:
        for _ in range(20):
            time.sleep(0.15)
            yield piece

    with run_proxy(routes, StubBearer()) as url, httpx.Client(base_url=url, headers={"X-CSRF": "1"}) as client:
        response = client.post("/api/paced/upload", content=paced(), timeout=BOUND)
    assert response.status_code == 200
    echoed = response.json()
    assert (echoed["body_length"], echoed["body_sha256"]) == (20 * len(piece), hashlib.sha256(piece * 20).hexdigest())
