"""The browser-facing edge of ``bff serve`` on real sockets: request-head limits (size and field count, counted as
the bytes arrive), the head deadline against slowloris, the idle keep-alive timeout, the per-worker connection limit,
and the uvicorn settings the test servers share with ``bff serve`` (no trust in a loopback peer's
``X-Forwarded-For``).

Every server here is ``tests.support.servers.serve``, which runs :func:`bff.serving.uvicorn_settings` exactly as
``bff serve`` does; the limits are made small so that each test takes a fraction of a second.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest

from bff.config import RouteSettings, ServerSettings
from bff.types import Receive, Scope, Send
from tests.proxy.conftest import PUBLIC_ORIGIN, ProxyApp, StubBearer
from tests.support.echo_upstream import EchoState, EchoUpstream
from tests.support.servers import serve

#: Generous bound on every wait, so that a server that hangs fails the test instead of hanging it.
WAIT = 10.0
SMALL = ServerSettings(max_request_header_size=4096, max_request_headers=20, header_timeout=5.0, keep_alive_timeout=5.0)


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the whole body, answers ``<method> <path> <body length> <client host>``."""
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    client = scope["client"][0] if scope.get("client") else "-"
    body = f"{scope['method']} {scope['path']} {size} {client}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@contextlib.contextmanager
def connect(url: str, timeout: float = WAIT) -> Iterator[socket.socket]:
    with socket.create_connection(("127.0.0.1", port_of(url)), timeout=timeout) as sock:
        yield sock


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


def read_answer(sock: socket.socket, buffer: bytearray | None = None) -> Answer | None:
    """One Content-Length-framed answer, or None when the server closed the connection before a whole answer."""
    data = buffer if buffer is not None else bytearray()
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return None
        if not chunk:
            return None
        data += chunk
    head, _, rest = bytes(data).partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    length = int(headers.get("content-length", "0"))
    body = bytearray(rest)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        body += chunk
    del data[:]
    data += body[length:]
    return Answer(int(status_line.split()[1]), headers, bytes(body[:length]))


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed (EOF or reset) within the socket's timeout; False if it is still open."""
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def head(size: int, *, target: bytes = b"/h") -> bytes:
    """A GET head of exactly ``size`` bytes, request line and final empty line included."""
    start = b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nX-Pad: "
    pad = size - len(start) - 4
    assert pad >= 0
    return start + b"p" * pad + b"\r\n\r\n"


# --- request-head size and field count ------------------------------------------------------------------------------


def test_a_128_mib_header_is_refused_with_431_after_about_the_limit() -> None:
    """Default limit (64 KiB): the answer comes while the client is still sending, and the server stops reading."""
    sent = [0]

    def flood(sock: socket.socket) -> None:
        piece = b"a" * 65536
        with contextlib.suppress(OSError):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
            for _ in range(128 * 16):
                sock.sendall(piece)
                sent[0] += len(piece)

    with serve(hello, lifespan="off") as url, connect(url) as sock:
        sender = threading.Thread(target=flood, args=(sock,), daemon=True)
        sender.start()
        answer = read_answer(sock)
        assert answer is not None
        assert answer.status == 431
        assert answer.headers["connection"] == "close"
        assert json.loads(answer.body)["error"] == "request_header_too_large"
        assert closed_by_server(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sender.join(WAIT)
    # The server stopped reading at the limit: what the client got out is bounded by the socket buffers, far from
    # the 128 MiB it meant to send.
    assert sent[0] < 32 * 1024 * 1024


@pytest.mark.parametrize("in_pieces", [False, True])
def test_a_head_of_exactly_the_limit_is_served_and_one_byte_more_is_refused(in_pieces: bool) -> None:
    limit = SMALL.max_request_header_size
    with serve(hello, lifespan="off", settings=SMALL) as url:
        for size, status in ((limit, 200), (limit + 1, 431)):
            with connect(url) as sock:
                data = head(size)
                if in_pieces:
                    for i in range(0, len(data), 1000):
                        sock.sendall(data[i : i + 1000])
                        time.sleep(0.005)
                else:
                    sock.sendall(data)
                answer = read_answer(sock)
                assert answer is not None, size
                assert answer.status == status, size


def test_a_huge_request_target_is_refused_with_431() -> None:
    with serve(hello, lifespan="off", settings=SMALL) as url, connect(url) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(b"GET /" + b"a" * (4 * 1024 * 1024))
        answer = read_answer(sock)
        assert answer is not None
        assert answer.status == 431


def test_a_small_head_with_a_big_body_in_the_same_segment_is_served() -> None:
    """Only the head counts: a body far beyond the head limit, arriving with the head, is the app's business."""
    body = b"b" * 300_000
    with serve(hello, lifespan="off", settings=SMALL) as url, connect(url) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        answer = read_answer(sock)
        assert answer is not None
        assert (answer.status, answer.body) == (200, b"POST /upload 300000 127.0.0.1")


def test_too_many_header_fields_are_refused_with_431() -> None:
    def request(fields: int) -> bytes:
        lines = [b"GET /f HTTP/1.1", b"Host: x"] + [b"X-F%d: 1" % i for i in range(fields - 1)]
        return b"\r\n".join(lines) + b"\r\n\r\n"

    with serve(hello, lifespan="off", settings=SMALL) as url:
        for fields, status in ((SMALL.max_request_headers, 200), (SMALL.max_request_headers + 1, 431)):
            with connect(url) as sock:
                sock.sendall(request(fields))
                answer = read_answer(sock)
                assert answer is not None
                assert answer.status == status, fields


def test_an_oversized_pipelined_head_is_never_served() -> None:
    """The second request's head starts in the middle of a segment: it is refused all the same; the first is served."""
    with serve(hello, lifespan="off", settings=SMALL) as url, connect(url) as sock:
        sock.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n" + head(SMALL.max_request_header_size + 200))
        buffer = bytearray()
        first = read_answer(sock, buffer)
        assert first is not None
        assert first.body == b"GET /first 0 127.0.0.1"
        assert first.headers["connection"] == "close"  # the last answer: the rest of the connection is refused
        assert read_answer(sock, buffer) is None  # the oversized request is never served
        assert closed_by_server(sock)


def test_many_small_pipelined_requests_in_one_segment_are_all_served() -> None:
    """A long pipeline is not mistaken for one big head."""
    count = 400  # ~40 KiB: ten times the small head limit
    with serve(hello, lifespan="off", settings=SMALL) as url, connect(url) as sock:
        sock.sendall(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(count)))
        buffer = bytearray()
        for i in range(count):
            answer = read_answer(sock, buffer)
            assert answer is not None, i
            assert answer.body == b"GET /%d 0 127.0.0.1" % i


# --- deadlines: slowloris, idle connections -------------------------------------------------------------------------


def test_slowloris_heads_get_408_at_the_head_deadline_however_often_they_send() -> None:
    settings = replace(SMALL, header_timeout=0.6, keep_alive_timeout=0.3)
    with serve(hello, lifespan="off", settings=settings) as url:
        socks = [socket.create_connection(("127.0.0.1", port_of(url)), timeout=WAIT) for _ in range(30)]
        try:
            started = time.monotonic()
            for sock in socks:
                sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n")
            refused: set[int] = set()
            line = 0
            # One header line per connection every 100 ms: each line would extend an idle timer; the head deadline
            # must not move.
            while len(refused) < len(socks) and time.monotonic() - started < WAIT:
                time.sleep(0.1)
                line += 1
                for i, sock in enumerate(socks):
                    if i not in refused:
                        try:
                            sock.sendall(b"X-Line-%d: 1\r\n" % line)
                        except OSError:
                            refused.add(i)
                            continue
                        sock.setblocking(False)
                        with contextlib.suppress(BlockingIOError):
                            if sock.recv(1, socket.MSG_PEEK):
                                refused.add(i)
                        sock.setblocking(True)
            elapsed = time.monotonic() - started
            assert len(refused) == len(socks)
            assert elapsed < 5 * settings.header_timeout  # the deadline did not follow the lines
            for sock in socks:
                sock.settimeout(WAIT)
                answer = read_answer(sock)
                assert answer is None or answer.status == 408
                if answer is not None:
                    assert json.loads(answer.body)["error"] == "request_timeout"
                assert closed_by_server(sock)
        finally:
            for sock in socks:
                sock.close()


def test_a_connection_that_sends_nothing_is_closed_silently() -> None:
    settings = replace(SMALL, header_timeout=0.4, keep_alive_timeout=0.2)
    with serve(hello, lifespan="off", settings=settings) as url, connect(url) as sock:
        started = time.monotonic()
        assert sock.recv(65536) == b""  # closed, without an answer
        assert time.monotonic() - started < WAIT / 2


def test_an_idle_keep_alive_connection_is_closed_after_keep_alive_timeout() -> None:
    settings = replace(SMALL, header_timeout=5.0, keep_alive_timeout=0.3)
    with serve(hello, lifespan="off", settings=settings) as url, connect(url) as sock:
        sock.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_answer(sock)
        assert answer is not None
        assert answer.status == 200
        started = time.monotonic()
        assert sock.recv(65536) == b""
        assert time.monotonic() - started < 4.0  # long before the 5 s head deadline


def test_keep_alive_traffic_slower_than_nothing_but_faster_than_the_timeouts_is_unaffected() -> None:
    """Requests every 150 ms on one connection for longer than both timeouts: each head has its own deadline."""
    settings = replace(SMALL, header_timeout=1.0, keep_alive_timeout=0.8)
    with serve(hello, lifespan="off", settings=settings) as url, connect(url) as sock:
        buffer = bytearray()
        for i in range(15):
            sock.sendall(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
            answer = read_answer(sock, buffer)
            assert answer is not None, i
            assert answer.status == 200
            time.sleep(0.15)


def test_a_slow_but_timely_head_is_served() -> None:
    settings = replace(SMALL, header_timeout=2.5, keep_alive_timeout=0.1)
    with serve(hello, lifespan="off", settings=settings) as url, connect(url) as sock:
        for piece in (b"GET /slow HTTP/1.1\r\n", b"Host: x\r\n", b"X-A: 1\r\n", b"\r\n"):
            sock.sendall(piece)
            time.sleep(0.25)  # longer than keep_alive_timeout between pieces: only the head deadline applies
        answer = read_answer(sock)
        assert answer is not None
        assert answer.status == 200


def test_a_body_that_stops_arriving_ends_the_connection_with_408() -> None:
    settings = replace(SMALL, body_timeout=0.3)
    with serve(hello, lifespan="off", settings=settings) as url, connect(url) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"b" * 10)
        answer = read_answer(sock)  # read_answer gives up after WAIT: a hang fails here
        assert answer is not None
        assert answer.status == 408
        assert json.loads(answer.body)["error"] == "request_timeout"
        assert closed_by_server(sock)


def test_a_slow_body_that_keeps_arriving_is_served() -> None:
    settings = replace(SMALL, body_timeout=0.8)
    with serve(hello, lifespan="off", settings=settings) as url, connect(url) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        for _ in range(10):  # 2 s in all, more than twice body_timeout, a byte every 200 ms
            time.sleep(0.2)
            sock.sendall(b"b")
        answer = read_answer(sock)
        assert answer is not None
        assert (answer.status, answer.body) == (200, b"POST /upload 10 127.0.0.1")


# --- connection limit -----------------------------------------------------------------------------------------------


def test_connections_beyond_max_connections_get_503_and_are_closed() -> None:
    settings = replace(SMALL, max_connections=5, header_timeout=30.0, keep_alive_timeout=30.0)
    with serve(hello, lifespan="off", settings=settings) as url:
        held = [socket.create_connection(("127.0.0.1", port_of(url)), timeout=WAIT) for _ in range(5)]
        try:
            for sock in held:  # each is accepted and served
                sock.sendall(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = read_answer(sock)
                assert answer is not None
                assert answer.status == 200
            for _ in range(3):
                with connect(url) as extra:
                    answer = read_answer(extra)
                    assert answer is not None
                    assert answer.status == 503
                    assert json.loads(answer.body)["error"] == "too_many_connections"
                    assert closed_by_server(extra)
            held.pop().close()
            deadline = time.monotonic() + WAIT
            while True:  # the server notices the close on its next loop turn
                with connect(url) as again:
                    again.sendall(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
                    answer = read_answer(again)
                    assert answer is not None
                    if answer.status == 200:
                        break
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            for sock in held:
                sock.close()


# --- the test servers run what bff serve runs -----------------------------------------------------------------------


def test_a_spoofed_x_forwarded_for_from_loopback_changes_nothing() -> None:
    """uvicorn's proxy_headers would believe X-Forwarded-For from 127.0.0.1; bff serve and the test servers don't."""
    with serve(hello, lifespan="off") as url, httpx.Client(base_url=url, timeout=WAIT) as client:
        response = client.get("/who", headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"})
    assert response.text == "GET /who 0 127.0.0.1"


def test_a_spoofed_x_forwarded_for_does_not_reach_the_upstream_through_a_test_proxy() -> None:
    from bff.proxy import Proxy
    from bff.upstream import UpstreamClient

    state = EchoState()
    with serve(EchoUpstream(state), lifespan="on") as upstream:
        client = UpstreamClient()
        proxy = Proxy(
            [RouteSettings(path="/api/echo", upstream=f"{upstream}/echo")],
            client,
            StubBearer(),
            public_origin=PUBLIC_ORIGIN,
            trusted_proxies=(),
        )
        with (
            serve(ProxyApp(proxy, client), lifespan="on") as url,
            httpx.Client(base_url=url, headers={"X-CSRF": "1"}, timeout=WAIT) as browser,
        ):
            response = browser.get("/api/echo/x", headers={"X-Forwarded-For": "203.0.113.9"})
    assert response.status_code == 200
    forwarded = [v for k, v in response.json()["headers"] if k == "x-forwarded-for"]
    assert forwarded == ["127.0.0.1"]


# --- header hygiene end to end --------------------------------------------------------------------------------------


async def hop_by_hop_upstream(scope: Scope, receive: Receive, send: Send) -> None:
    """Echoes the request's header names; answers with every hop-by-hop and proxy authentication field."""
    if scope["type"] != "http":
        return
    body = json.dumps(sorted(k.decode() for k, _ in scope["headers"])).encode()
    headers = [
        (b"content-length", b"%d" % len(body)),
        (b"content-type", b"application/json"),
        (b"connection", b"keep-alive, x-named-hop"),
        (b"x-named-hop", b"for the next hop"),
        (b"keep-alive", b"timeout=5"),
        (b"proxy-authenticate", b'Basic realm="upstream-proxy"'),
        (b"proxy-authorization", b"Basic dXBzdHJlYW06c2VjcmV0"),
        (b"proxy-authentication-info", b"nextnonce=1"),
        (b"proxy-connection", b"keep-alive"),
        (b"te", b"trailers"),
        (b"trailer", b"x-checksum"),
        (b"upgrade", b"h2c"),
        (b"x-kept", b"1"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def test_underscored_request_headers_and_hop_by_hop_answer_fields_stop_at_bff() -> None:
    from bff.proxy import Proxy
    from bff.upstream import UpstreamClient

    with serve(hop_by_hop_upstream, lifespan="off") as upstream:
        client = UpstreamClient()
        proxy = Proxy(
            [RouteSettings(path="/api", upstream=upstream)],
            client,
            StubBearer(),
            public_origin=PUBLIC_ORIGIN,
            trusted_proxies=(),
        )
        with serve(ProxyApp(proxy, client), lifespan="on") as url, connect(url) as sock:
            sock.sendall(
                b"GET /api/x HTTP/1.1\r\nHost: bff.test\r\nX-CSRF: 1\r\nX_Forwarded_For: 203.0.113.66\r\n"
                b"x-forwarded_host: evil.example\r\nX_Real_IP: 203.0.113.66\r\nX-Kept-Request: 1\r\n\r\n"
            )
            answer = read_answer(sock)
    assert answer is not None
    assert answer.status == 200
    received = json.loads(answer.body)
    assert "x-kept-request" in received
    assert not [name for name in received if "_" in name]
    assert answer.headers.get("x-kept") == "1"
    for gone in (
        "x-named-hop",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-authentication-info",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ):
        assert gone not in answer.headers, gone
