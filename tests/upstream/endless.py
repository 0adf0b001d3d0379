"""An upstream whose answer never ends: for the tests that the client refuses it at its limit, holding little."""

from __future__ import annotations

import asyncio


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
