"""Property tests for the browser side of bff's HTTP server: Hypothesis generates request heads and bodies, well
formed and hostile (smuggling framings: CL+TE, duplicate or malformed Content-Length, odd Transfer-Encoding, obs-fold,
bare LF or CR, control bytes), cut into random segments, and sends them over raw sockets to a real server running
``bff serve``'s uvicorn settings (``tests.support.servers.serve``) with small limits. After every example:

- the server answered or closed within a deadline (it never hangs), bodies cut short included;
- no request whose head exceeded ``max_request_header_size`` (or had too many fields) reached the app, and every
  well-formed head within the limits did;
- one browser request never became two at the app, nor at an upstream behind bff's Proxy: the request hidden in
  each body never reached either;
- a new connection is served normally.

The app reads each body to its end before answering, as a proxied route does.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count, pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bff.config import ServerSettings
from bff.types import Receive, Scope, Send
from tests.support.servers import serve

LIMIT = 2048
FIELDS = 24
EDGE = ServerSettings(
    max_request_header_size=LIMIT,
    max_request_headers=FIELDS,
    header_timeout=1.0,
    keep_alive_timeout=1.0,
    body_timeout=0.6,
)
#: Answer or close within this long, or the server is hanging (the head and body deadlines are 1 s and 0.6-1.2 s).
DEADLINE = 4.0
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_ids = count()


@dataclass
class Seen:
    paths: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, path: str) -> None:
        with self.lock:
            self.paths.append(path)

    def matching(self, marker: str) -> list[str]:
        with self.lock:
            return [p for p in self.paths if marker in p]


class Recorder:
    """Records each request's path when its head arrives, reads the body to its end, answers 200."""

    def __init__(self) -> None:
        self.seen = Seen()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        self.seen.add(scope["path"])
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"%d" % size
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})


@dataclass
class Server:
    port: int
    app: Recorder


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    app = Recorder()
    with serve(app, lifespan="off", settings=EDGE) as url:
        yield Server(int(url.rsplit(":", 1)[1]), app)


def exchange(port: int, segments: list[bytes]) -> tuple[int | None, bool]:
    """Send the segments, then read until one whole answer or the close. (status or None, closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        with contextlib.suppress(OSError):  # the server may close while we still send: that is an answer too
            for segment in segments:
                sock.sendall(segment)
        data = b""
        started = time.monotonic()
        while True:
            if time.monotonic() - started > DEADLINE:
                raise AssertionError(f"no answer and no close within {DEADLINE}s")
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return (_status(data), True)
            except TimeoutError:
                raise AssertionError(f"no answer and no close within {DEADLINE}s") from None
            if not chunk:
                return (_status(data), True)
            data += chunk
            head, sep, rest = data.partition(b"\r\n\r\n")
            if sep:
                lengths = [ln for ln in head.lower().split(b"\r\n") if ln.startswith(b"content-length:")]
                if lengths and len(rest) >= int(lengths[0].split(b":")[1]):
                    return (_status(data), False)


def _status(data: bytes) -> int | None:
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None


def assert_served_normally(port: int, prefix: str = "") -> None:
    marker = f"{prefix}/next-{next(_ids)}"
    status, _ = exchange(port, [f"GET {marker} HTTP/1.1\r\nHost: x\r\nX-CSRF: 1\r\n\r\n".encode()])
    assert status == 200


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in pairwise(points) if b > a]


# --- strategies -----------------------------------------------------------------------------------------------------

TOKEN = "!#$%&'*+-.^`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
names = st.one_of(
    st.text(TOKEN, min_size=1, max_size=24),
    st.sampled_from(["X-Forwarded-For", "Cookie", "Accept", "User-Agent", "X_Forwarded_For", "Expect"]),
)
field_values = st.binary(max_size=300).map(lambda b: bytes(c for c in b if c >= 0x20 and c != 0x7F).strip(b" \t"))
cuts = st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=6)


def smuggled(marker: str) -> bytes:
    return f"GET /smuggled{marker} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


def chunked(body: bytes, sizes: list[int]) -> bytes:
    out, i = b"", 0
    for size in [*sizes, len(body)]:
        piece = body[i : i + max(1, size)]
        if not piece:
            break
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
        i += len(piece)
    return out + b"0\r\n\r\n"


#: Framings whose meaning a proxy and a server may disagree on; each carries the whole hidden request as body by the
#: reading of a client that believes the first length it sent.
HOSTILE = [
    "cl+te",
    "te+cl",
    "dup-cl",
    "dup-cl-same",
    "cl-plus",
    "cl-space-inside",
    "cl-hex",
    "cl-comma",
    "te-identity-chunked",
    "te-chunked-identity",
    "te-xchunked",
    "te-space-colon",
    "te-folded",
    "te-tab",
    "te-dup",
    "bare-lf",
    "bare-cr",
    "nul-in-value",
    "http10-te",
    "space-before-colon",
    "leading-space-field",
]


def framed_request(marker: str, framing: str, extra: list[tuple[str, bytes]], chunk_sizes: list[int]) -> bytes:
    body = b"x" * 5 + smuggled(marker)
    n = str(len(body)).encode()
    lines = [f"POST /m{marker} HTTP/1.1".encode(), b"Host: x"]
    lines += [k.encode() + b": " + v for k, v in extra]
    payload = body
    match framing:
        case "cl":
            lines.append(b"Content-Length: " + n)
        case "chunked":
            lines.append(b"Transfer-Encoding: chunked")
            payload = chunked(body, chunk_sizes)
        case "cl+te":
            lines += [b"Content-Length: " + n, b"Transfer-Encoding: chunked"]
        case "te+cl":
            lines += [b"Transfer-Encoding: chunked", b"Content-Length: 5"]
            payload = chunked(body, chunk_sizes)
        case "dup-cl":
            lines += [b"Content-Length: " + n, b"Content-Length: 5"]
        case "dup-cl-same":
            lines += [b"Content-Length: " + n, b"Content-Length: " + n]
        case "cl-plus":
            lines.append(b"Content-Length: +" + n)
        case "cl-space-inside":
            lines.append(b"Content-Length: 5 " + n)
        case "cl-hex":
            lines.append(b"Content-Length: 0x%x" % len(body))
        case "cl-comma":
            lines.append(b"Content-Length: 5, " + n)
        case "te-identity-chunked":
            lines.append(b"Transfer-Encoding: identity, chunked")
            payload = chunked(body, chunk_sizes)
        case "te-chunked-identity":
            lines += [b"Transfer-Encoding: chunked, identity", b"Content-Length: " + n]
        case "te-xchunked":
            lines += [b"Transfer-Encoding: xchunked", b"Content-Length: " + n]
        case "te-space-colon":
            lines += [b"Transfer-Encoding : chunked", b"Content-Length: " + n]
        case "te-folded":
            lines += [b"Transfer-Encoding:", b" chunked", b"Content-Length: " + n]
        case "te-tab":
            lines.append(b"Transfer-Encoding:\tchunked")
            payload = chunked(body, chunk_sizes)
        case "te-dup":
            lines += [b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"]
            payload = chunked(body, chunk_sizes)
        case "bare-lf":
            lines.append(b"Content-Length: " + n)
            return b"\n".join(lines) + b"\n\n" + payload
        case "bare-cr":
            lines += [b"X-A: 1\rContent-Length: 5", b"Content-Length: " + n]
        case "nul-in-value":
            lines += [b"X-A: a\x00b", b"Content-Length: " + n]
        case "http10-te":
            lines[0] = f"POST /m{marker} HTTP/1.0".encode()
            lines += [b"Transfer-Encoding: chunked", b"Content-Length: " + n]
        case "space-before-colon":
            lines.append(b"Content-Length : " + n)
        case "leading-space-field":
            lines.insert(1, b" Content-Length: 5")
            lines.append(b"Content-Length: " + n)
    return b"\r\n".join(lines) + b"\r\n\r\n" + payload


# --- properties -----------------------------------------------------------------------------------------------------


@PROPERTY
@given(
    framing=st.sampled_from(["cl", "chunked", *HOSTILE]),
    extra=st.lists(st.tuples(names, field_values), max_size=4),
    chunk_sizes=st.lists(st.integers(min_value=1, max_value=40), max_size=4),
    where=cuts,
)
def test_one_browser_request_is_never_two(
    server: Server, framing: str, extra: list[tuple[str, bytes]], chunk_sizes: list[int], where: list[int]
) -> None:
    marker = str(next(_ids))
    request = framed_request(marker, framing, extra, chunk_sizes)
    status, _ = exchange(server.port, split(request, where))
    assert_served_normally(server.port)
    assert server.app.seen.matching(f"/smuggled{marker}") == []
    served = server.app.seen.matching(f"/m{marker}")
    assert len(served) <= 1
    if framing in ("cl", "chunked"):
        assert status == 200
        assert served == [f"/m{marker}"]
    elif status == 200:
        assert served == [f"/m{marker}"]  # a framing the parser accepted: the same single request


@PROPERTY
@given(
    size=st.integers(min_value=LIMIT - 300, max_value=LIMIT + 300),
    fields=st.integers(min_value=2, max_value=FIELDS + 3),
    pipelined=st.booleans(),
    where=cuts,
)
def test_no_head_beyond_the_limits_reaches_the_app(
    server: Server, size: int, fields: int, pipelined: bool, where: list[int]
) -> None:
    marker = str(next(_ids))
    lines = [f"GET /h{marker} HTTP/1.1".encode(), b"Host: x"] + [b"X-F%d: 1" % i for i in range(fields - 2)]
    start = b"\r\n".join(lines) + b"\r\nX-Pad: "
    pad = size - len(start) - 4
    if pad < 0:
        return
    head = start + b"p" * pad + b"\r\n\r\n"
    assert len(head) == size
    before = b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n" if pipelined else b""
    exchange_all(server.port, split(before + head, where), answers=2 if pipelined else 1)
    assert_served_normally(server.port)
    served = server.app.seen.matching(f"/h{marker}")
    if size > LIMIT or fields > FIELDS:
        assert served == []
    elif not pipelined:  # a pipelined head is charged conservatively: it may be refused a little early
        assert served == [f"/h{marker}"]


def exchange_all(port: int, segments: list[bytes], answers: int) -> None:
    """Send, then read until ``answers`` answers or the close; never longer than the deadline."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        with contextlib.suppress(OSError):
            for segment in segments:
                sock.sendall(segment)
        data, started = b"", time.monotonic()
        while data.count(b"HTTP/1.1 ") < answers or not data.endswith((b"0", b"1", b"2", b"3", b"4", b"}")):
            assert time.monotonic() - started < DEADLINE, "the server hangs"
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return
            if not chunk:
                return
            data += chunk


@settings(max_examples=40, deadline=None)
@given(request=st.binary(min_size=1, max_size=200), prefix=st.sampled_from([b"", b"GET / HTTP/1.1\r\n"]))
def test_garbage_and_unfinished_heads_are_answered_or_closed_in_time(
    server: Server, request: bytes, prefix: bytes
) -> None:
    """Random bytes (or a head that never ends): 400, 408 or a close, within the deadline, never a hang."""
    status, closed = exchange(server.port, [prefix + request.replace(b"\r\n\r\n", b"\r\n")])
    assert closed or status in (400, 408, 200)
    assert_served_normally(server.port)


@settings(max_examples=6, deadline=None)
@given(
    framing=st.sampled_from(["cl", "chunked"]),
    keep=st.floats(min_value=0.0, max_value=0.95),
    chunk_sizes=st.lists(st.integers(min_value=1, max_value=40), max_size=4),
)
def test_a_body_cut_short_is_answered_or_closed_in_time(
    server: Server, framing: str, keep: float, chunk_sizes: list[int]
) -> None:
    """The body stops arriving anywhere before its end: 408 or a close within the deadline, never a hang."""
    marker = str(next(_ids))
    request = framed_request(marker, framing, [], chunk_sizes)
    head_end = request.index(b"\r\n\r\n") + 4
    cut = head_end + int((len(request) - head_end) * keep)
    status, closed = exchange(server.port, [request[:cut]])
    assert closed or status == 408
    assert_served_normally(server.port)
    assert server.app.seen.matching(f"/smuggled{marker}") == []


@dataclass
class ProxiedServer:
    port: int
    upstream: Recorder


@pytest.fixture(scope="module")
def proxied() -> Iterator[ProxiedServer]:
    """bff's Proxy (bff serve's settings, the same limits) in front of a recording upstream."""
    from bff.config import RouteSettings
    from bff.proxy import Proxy
    from bff.upstream import UpstreamClient
    from tests.proxy.conftest import PUBLIC_ORIGIN, ProxyApp, StubBearer

    upstream = Recorder()
    with serve(upstream, lifespan="off") as upstream_url:
        client = UpstreamClient()
        proxy = Proxy(
            [RouteSettings(path="/api", upstream=upstream_url, token="none", timeout=DEADLINE / 2)],
            client,
            StubBearer(),
            public_origin=PUBLIC_ORIGIN,
            trusted_proxies=(),
        )
        with serve(ProxyApp(proxy, client), lifespan="on", settings=EDGE) as url:
            yield ProxiedServer(int(url.rsplit(":", 1)[1]), upstream)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    framing=st.sampled_from(["cl", "chunked", *HOSTILE]),
    chunk_sizes=st.lists(st.integers(min_value=1, max_value=40), max_size=4),
    where=cuts,
)
def test_one_browser_request_never_reaches_the_upstream_twice(
    proxied: ProxiedServer, framing: str, chunk_sizes: list[int], where: list[int]
) -> None:
    marker = str(next(_ids))
    request = framed_request(marker, framing, [("X-CSRF", b"1")], chunk_sizes).replace(
        f"/m{marker} ".encode(), f"/api/m{marker} ".encode(), 1
    )
    status, _ = exchange(proxied.port, split(request, where))
    assert_served_normally(proxied.port, "/api")
    assert proxied.upstream.seen.matching(f"/smuggled{marker}") == []
    reached = proxied.upstream.seen.matching(f"/m{marker}")
    assert len(reached) <= 1
    if framing in ("cl", "chunked"):
        assert status == 200
        assert reached == [f"/m{marker}"]


def test_floods_of_header_bytes_leave_memory_bounded(server: Server) -> None:
    """Eight connections each send a 16 MiB header: the server reads about the limit of each, then closes. Python's
    allocations (the server's included: it runs in this process) peak far below one such header."""
    tracemalloc.start()

    def flood() -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE) as sock:
            with contextlib.suppress(OSError):
                sock.sendall(b"GET /flood HTTP/1.1\r\nHost: x\r\nX-Big: ")
                for _ in range(256):
                    sock.sendall(b"f" * 65536)
            with contextlib.suppress(OSError):
                sock.recv(65536)

    threads = [threading.Thread(target=flood, daemon=True) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE * 4)
        assert not thread.is_alive()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"allocations peaked at {peak} bytes"
    assert server.app.seen.matching("/flood") == []
    assert_served_normally(server.port)
