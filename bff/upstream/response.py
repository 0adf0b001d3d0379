"""A streamed upstream answer: status and header lines as received, the body read chunk by chunk.

Its owner must end it with :meth:`UpstreamResponse.release` (the body was read to the end: the connection may go
back to the pool) or :meth:`UpstreamResponse.close` (abandoned: the connection is closed), in a ``finally``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from bff.upstream.connection import Connection
from bff.upstream.pool import ConnectionPool


class UpstreamResponse:
    """A streamed upstream answer. Its owner must call :meth:`release` or :meth:`close` (try/finally)."""

    __slots__ = ("_connection", "_origin_key", "_pool", "headers", "status")

    def __init__(self, connection: Connection, pool: ConnectionPool, origin_key: tuple[object, ...]) -> None:
        self._connection: Connection | None = connection
        self._pool = pool
        self._origin_key = origin_key
        self.status: int = connection.status
        #: The header lines exactly as received: original case, order and duplicates.
        self.headers: Sequence[tuple[bytes, bytes]] = connection.headers

    async def read_chunk(self) -> bytes:
        """The next bytes the upstream sent, as soon as any arrived; ``b""`` at the end of the body."""
        if self._connection is None:
            return b""
        return await self._connection.read_chunk()

    def at_eof(self) -> bool:
        """True once the whole body has been received and read: the last chunk needs no ``more_body``."""
        return self._connection is None or self._connection.at_eof()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while chunk := await self.read_chunk():
            yield chunk

    def release(self) -> None:
        """Done with the answer: its connection returns to the pool if the body was read to the end, else closes."""
        connection, self._connection = self._connection, None
        if connection is not None:
            self._pool.release(self._origin_key, connection)

    def close(self) -> None:
        """Abandon the answer: its connection is closed, never reused."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
