"""Raw-socket upstreams on loopback for the data-plane client's tests: :func:`start` serves a handler,
:func:`serving` serves one that keeps its connections' writers, :class:`EndlessAnswer` answers without end (the
client must refuse it at its limit)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def start(handler: Handler, context: ssl.SSLContext | None = None) -> tuple[asyncio.Server, int]:
    """An ``asyncio.start_server`` on a free loopback port (TLS with ``context``): the server and its port."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=context)
    return server, server.sockets[0].getsockname()[1]


class RawUpstream(Protocol):
    """An ``asyncio.start_server`` handler that appends each connection's writer to ``writers``."""

    writers: list[asyncio.StreamWriter]

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None: ...


@contextlib.asynccontextmanager
async def serving(upstream: RawUpstream) -> AsyncIterator[str]:
    """Serve ``upstream`` on loopback; yields its URL. On leaving, hangs up on every connection it kept alive, so
    that their handlers end now."""
    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    async with server:
        try:
            yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        finally:
            for writer in upstream.writers:
                writer.close()
            await asyncio.sleep(0)


class EndlessAnswer:
    """Reads a request head, writes ``prefix``, then ``piece`` after ``piece`` until ``total`` bytes of them are out
    or the client hangs up. ``sent`` counts the bytes of the pieces written; ``finished`` is set when it stops."""

    def __init__(self, prefix: bytes, piece: bytes, total: int) -> None:
        self.prefix = prefix
        self.piece = piece
        self.total = total
        self.sent = 0
        self.finished = asyncio.Event()

    async def handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(self.prefix)
            while self.sent < self.total:
                writer.write(self.piece)
                await writer.drain()
                self.sent += len(self.piece)
        except ConnectionError:
            pass
        finally:
            self.finished.set()
            writer.close()
