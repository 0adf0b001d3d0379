"""``bff.serving``: the writes of one event-loop turn leave a connection in one send, and nothing else about the
transport changes. Unit tests against a recording transport, then a real uvicorn server on the protocol (every
server in the suite runs on it, WebSocket relays included: ``tests/support/servers.py``)."""

from __future__ import annotations

import asyncio
import functools
import pickle
import socket
from typing import Any, cast

import pytest
import uvicorn
from uvicorn.server import ServerState

from bff.config import ServerSettings
from bff.serving import FLUSH_AT, CoalescingHttpToolsProtocol, CoalescingTransport, EdgeLimits, uvicorn_settings
from bff.types import Receive, Scope, Send
from tests.support.servers import serve


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False
        self.closed = False
        self.aborted = False
        self.eof = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closing or self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def write_eof(self) -> None:
        self.eof = True

    def get_write_buffer_size(self) -> int:
        return 7

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 4242)}.get(name, default)


def wrap() -> tuple[CoalescingTransport, RecordingTransport]:
    inner = RecordingTransport()
    return CoalescingTransport(cast(asyncio.Transport, inner), asyncio.get_running_loop()), inner


async def test_the_writes_of_one_turn_leave_together_at_its_end() -> None:
    transport, inner = wrap()
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(bytearray(b"o"))
    transport.writelines([memoryview(b"k"), b""])
    assert inner.writes == []  # nothing yet: the turn is not over
    assert transport.get_write_buffer_size() == 7 + 40
    await asyncio.sleep(0)
    assert inner.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
    transport.write(b"next")
    await asyncio.sleep(0)
    assert inner.writes[1:] == [b"next"]


async def test_close_and_write_eof_send_what_is_pending_first() -> None:
    transport, inner = wrap()
    transport.write(b"last words")
    transport.close()
    assert inner.writes == [b"last words"]
    assert inner.closed
    await asyncio.sleep(0)  # the scheduled flush finds nothing left, and writes nothing after close
    assert inner.writes == [b"last words"]

    transport, inner = wrap()
    transport.write(b"body")
    transport.write_eof()
    assert (inner.writes, inner.eof) == ([b"body"], True)


async def test_abort_drops_what_is_pending() -> None:
    transport, inner = wrap()
    transport.write(b"never sent")
    transport.abort()
    await asyncio.sleep(0)
    assert inner.aborted
    assert inner.writes == []


async def test_a_closing_transport_gets_no_more_bytes() -> None:
    transport, inner = wrap()
    transport.write(b"late")
    inner.closing = True
    await asyncio.sleep(0)
    assert inner.writes == []


async def test_a_big_answer_is_not_held_back() -> None:
    transport, inner = wrap()
    transport.write(b"h" * 100)
    transport.write(b"b" * FLUSH_AT)
    assert inner.writes == [b"h" * 100 + b"b" * FLUSH_AT]  # at once, without waiting for the turn's end
    transport.write(b"tail")
    await asyncio.sleep(0)
    assert inner.writes[1:] == [b"tail"]


async def test_everything_else_is_the_transports_own() -> None:
    transport, _ = wrap()
    assert transport.get_extra_info("peername") == ("127.0.0.1", 4242)
    assert transport.is_closing() is False


def test_bff_serve_names_uvloop_the_coalescing_protocol_and_its_limits() -> None:
    server = ServerSettings(host="0.0.0.0", port=8443, max_connections=7, header_timeout=3.0, keep_alive_timeout=2.0)
    settings = uvicorn_settings(server)
    protocol = settings.pop("http")
    assert settings == {
        "host": "0.0.0.0",
        "port": 8443,
        "loop": "uvloop",
        "proxy_headers": False,
        "server_header": False,
        "timeout_keep_alive": 2.0,
    }
    assert isinstance(protocol, functools.partial)
    assert protocol.func is CoalescingHttpToolsProtocol
    assert protocol.keywords == {"limits": EdgeLimits.of(server)}
    assert protocol.keywords["limits"].max_connections == 7
    # --workers N sends the settings to each worker process by pickling them.
    assert pickle.loads(pickle.dumps(protocol)).keywords == protocol.keywords  # noqa: S301 - our own bytes


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "http"
    body = scope["path"].encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


async def test_uvicorns_protocol_sends_an_answer_in_one_write() -> None:
    config = uvicorn.Config(hello, lifespan="off", log_level="warning")
    config.load()
    protocol = CoalescingHttpToolsProtocol(config, ServerState(), app_state={}, _loop=asyncio.get_running_loop())
    inner = RecordingTransport()
    protocol.connection_made(cast(asyncio.Transport, inner))
    protocol.data_received(b"GET /one-write HTTP/1.1\r\nHost: x\r\n\r\n")
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(inner.writes) == 1, inner.writes
    head, _, body = inner.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert body == b"/one-write"
    protocol.connection_lost(None)


def read_answers(sock: socket.socket, count: int) -> list[bytes]:
    """``count`` answers of :func:`hello` (Content-Length framed) from a raw socket."""
    data, answers = b"", list[bytes]()
    while len(answers) < count:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {answers}"
        data += chunk
        while b"\r\n\r\n" in data:
            head, _, rest = data.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(rest) < length:
                break
            answers.append(head.split(b"\r\n")[0] + b" " + rest[:length])
            data = rest[length:]
    return answers


@pytest.mark.parametrize("pipelined", [False, True])
def test_keep_alive_and_pipelined_requests_get_their_own_answers_in_order(pipelined: bool) -> None:
    with serve(hello, lifespan="off") as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            requests = [b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(20)]
            answers: list[bytes] = []
            if pipelined:
                sock.sendall(b"".join(requests))
                answers = read_answers(sock, 20)
            else:
                for request in requests:
                    sock.sendall(request)
                    answers += read_answers(sock, 1)
    assert answers == [b"HTTP/1.1 200 OK /%d" % i for i in range(20)]
