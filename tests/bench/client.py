"""A lean HTTP/1.1 client for the benchmark's own requests (not wrk's): h11 over asyncio streams, one keep-alive
connection per :class:`Connection`. httpx's pool slows down with the square of the connections it holds, which
thousands of them make minutes, and its per-request work makes a pass over 10,000 sessions take tens of seconds."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

import h11


class Connection:
    """One HTTP/1.1 keep-alive connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host
        self.h11 = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, url: str) -> Connection:
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return cls(reader, writer, parts.netloc)

    async def get(self, path: str, headers: Mapping[str, str]) -> tuple[int, bytes]:
        """GET ``path``; the status and the body, once the whole answer is read (the connection stays open)."""
        if self.h11.our_state is h11.DONE:
            self.h11.start_next_cycle()
        fields = [("Host", self.host), *headers.items()]
        self.writer.write(self.h11.send(h11.Request(method="GET", target=path, headers=fields)) or b"")
        self.writer.write(self.h11.send(h11.EndOfMessage()) or b"")
        await self.writer.drain()
        status, body = 0, bytearray()
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(await self.reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the server closed the connection")

    def close(self) -> None:
        self.writer.close()


async def each_once(url: str, path: str, headers: Sequence[Mapping[str, str]], connections: int = 32) -> list[str]:
    """One GET per header set over ``connections`` keep-alive connections; each answer other than 200, as its
    status and the start of its body."""
    queue = list(reversed(headers))
    failures: list[str] = []

    async def worker() -> None:
        connection = await Connection.open(url)
        try:
            while queue:
                status, body = await connection.get(path, queue.pop())
                if status != 200:
                    failures.append(f"{status} {body[:200].decode(errors='replace')}")
        finally:
            connection.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return failures
