"""The dev server's WebSocket client against scripted raw-socket peers on loopback: what goes on the wire in the
handshake (no cookie, no compression offer, no User-Agent), what it refuses to do (follow a redirect, use a proxy
from the environment), how its failures are translated (502/504 errors with fixed messages) and how close codes
cross (RFC 6455 7.4).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from bff.errors import UpstreamError, UpstreamTimeout
from bff.upstream.websocket import WebSocketClient

BOUND = 10
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 1.3

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[None]]


class Peer:
    """A TCP server on 127.0.0.1 that reads each request head and hands it to a script."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.heads: list[bytes] = []
        self.port = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            await self.script(reader, writer, head)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def peer(script: Script) -> AsyncIterator[Peer]:
    server_peer = Peer(script)
    server = await asyncio.start_server(server_peer._handle, "127.0.0.1", 0)
    server_peer.port = server.sockets[0].getsockname()[1]
    try:
        yield server_peer
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), BOUND)


def _accept(head: bytes, extra: bytes = b"") -> bytes:
    key = next(
        line.split(b":", 1)[1].strip() for line in head.split(b"\r\n") if line.lower().startswith(b"sec-websocket-key:")
    )
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())  # noqa: S324 - RFC 6455 4.2.2 mandates SHA-1
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n" + extra + b"\r\n"
    )


async def _accept_then(frames: bytes, writer: asyncio.StreamWriter, reader: asyncio.StreamReader, head: bytes) -> None:
    writer.write(_accept(head) + frames)
    await writer.drain()
    await asyncio.wait_for(reader.read(1024), BOUND)  # the client's Close frame (or EOF): then end the TCP connection


def _header_names(head: bytes) -> set[bytes]:
    return {line.split(b":", 1)[0].strip().lower() for line in head.split(b"\r\n")[1:] if b":" in line}


async def test_the_handshake_carries_only_the_callers_headers() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
        await _accept_then(b"\x81\x02hi", writer, reader, head)

    client = WebSocketClient(connect_timeout=BOUND)
    async with peer(script) as server:
        url = f"ws://127.0.0.1:{server.port}/@vite/client?t=%41"
        ws = await asyncio.wait_for(client.connect(url, [("origin", "http://localhost:8000")], ["vite-hmr"]), BOUND)
        try:
            frame = await asyncio.wait_for(ws.receive(), BOUND)
            assert (frame.kind, frame.data) == ("text", "hi")
        finally:
            await asyncio.wait_for(ws.close(), BOUND)
        await client.aclose()
    (head,) = server.heads
    assert head.startswith(b"GET /@vite/client?t=%41 HTTP/1.1\r\n")  # the target byte for byte
    names = _header_names(head)
    assert b"origin" in names
    assert b"sec-websocket-protocol" in names
    assert not names & {b"user-agent", b"cookie", b"authorization", b"sec-websocket-extensions"}


async def test_a_redirect_is_refused_not_followed() -> None:
    async def elsewhere(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
        await _accept_then(b"", writer, reader, head)

    async with peer(elsewhere) as target:

        async def redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
            location = f"ws://127.0.0.1:{target.port}/".encode()
            writer.write(b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()

        async with peer(redirect) as server:
            with pytest.raises(UpstreamError, match=r"refused the WebSocket handshake \(HTTP 302\)"):
                await asyncio.wait_for(WebSocketClient().connect(f"ws://127.0.0.1:{server.port}/", [], []), BOUND)
        assert target.heads == []


async def test_no_proxy_is_taken_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()

    async def dev_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
        await _accept_then(b"", writer, reader, head)

    async with peer(proxy) as proxy_server, peer(dev_server) as server:
        for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy_server.port}")
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        ws = await asyncio.wait_for(WebSocketClient().connect(f"ws://127.0.0.1:{server.port}/", [], []), BOUND)
        await asyncio.wait_for(ws.close(), BOUND)
    assert proxy_server.heads == []
    assert len(server.heads) == 1


async def test_a_silent_upstream_is_a_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
        await asyncio.sleep(BOUND)

    async with peer(silent) as server:
        with pytest.raises(UpstreamTimeout) as timed_out:
            await asyncio.wait_for(
                WebSocketClient(connect_timeout=0.2).connect(f"ws://127.0.0.1:{server.port}/", [], []), BOUND
            )
    assert str(server.port) not in timed_out.value.message


async def test_a_refused_connection_is_a_bad_gateway_without_the_url() -> None:
    async with peer(lambda *_: asyncio.sleep(0)) as server:
        port = server.port
    with pytest.raises(UpstreamError) as refused:
        await asyncio.wait_for(WebSocketClient().connect(f"ws://127.0.0.1:{port}/secret-path", [], []), BOUND)
    assert refused.value.message == "the upstream could not be reached"


@pytest.mark.parametrize(
    ("frames", "expected"),
    [
        (b"\x88\x02" + struct.pack("!H", 4001), 4001),  # an application close code crosses
        (b"\x88\x00", 1000),  # a Close frame without a code (1005 is for reporting only): normal closure
        (b"", 1011),  # the link broke without a Close frame: an internal error, never 1006 on the wire
    ],
)
async def test_close_codes_cross_as_sendable_codes(frames: bytes, expected: int) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
        writer.write(_accept(head) + frames)
        await writer.drain()
        if frames:
            await asyncio.wait_for(reader.read(1024), BOUND)

    async with peer(script) as server:
        ws = await asyncio.wait_for(WebSocketClient().connect(f"ws://127.0.0.1:{server.port}/", [], []), BOUND)
        try:
            frame = await asyncio.wait_for(ws.receive(), BOUND)
        finally:
            await asyncio.wait_for(ws.close(), BOUND)
    assert (frame.kind, frame.code) == ("close", expected)


async def test_sending_on_a_closed_websocket_is_an_upstream_error() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
        await _accept_then(b"\x88\x02" + struct.pack("!H", 1000), writer, reader, head)

    async with peer(script) as server:
        ws = await asyncio.wait_for(WebSocketClient().connect(f"ws://127.0.0.1:{server.port}/", [], []), BOUND)
        try:
            assert (await asyncio.wait_for(ws.receive(), BOUND)).kind == "close"
            with pytest.raises(UpstreamError, match="closed"):
                await ws.send_text("late")
            with pytest.raises(UpstreamError, match="closed"):
                await ws.send_bytes(b"late")
        finally:
            await asyncio.wait_for(ws.close(), BOUND)


@pytest.mark.parametrize("value", ["Bearer a\r\nX-Evil: 1", "Bearer a\nX-Evil: 1", "Bearer a\x00b"])
async def test_a_header_value_that_would_break_its_line_never_reaches_the_upstream(value: str) -> None:
    """A hostile token (CR, LF or NUL in it) cannot add a header line to the upstream handshake: refused, 502."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
        await _accept_then(b"", writer, reader, head)

    client = WebSocketClient(connect_timeout=BOUND)
    async with peer(script) as server:
        url = f"ws://127.0.0.1:{server.port}/live"
        with pytest.raises(UpstreamError) as refused:
            await asyncio.wait_for(client.connect(url, [("authorization", value)], []), BOUND)
    assert "X-Evil" not in refused.value.message
    assert not any(b"x-evil" in head.lower() for head in server.heads)
