"""The browser's request body, read from ASGI ``receive()``: counted against the route's ``max_body`` as it flows
(a chunked body has no length to check up front), and kept while it is small enough to be sent again after a refresh.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from bff.errors import PayloadTooLarge
from bff.types import Receive
from bff.upstream import RequestBody


class ClientGone(Exception):
    """The browser disconnected while its request body was being read."""


class RequestBodyReader:
    """The browser's body read from ``receive()``: counted against ``max_body``, kept while it is replayable."""

    __slots__ = ("_keep_limit", "_max_body", "_receive", "complete", "disconnected", "kept", "received", "too_large")

    def __init__(self, receive: Receive, max_body: int, keep_limit: int) -> None:
        self._receive = receive
        self._max_body = max_body
        self._keep_limit = keep_limit
        self.received = 0
        self.kept: list[bytes] | None = []
        self.complete = False
        self.too_large = False
        self.disconnected = False

    async def _next(self) -> bytes:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.disconnected = True
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        self.received += len(chunk)
        if self.received > self._max_body:
            self.too_large = True
            raise PayloadTooLarge(f"the request body exceeds {self._max_body} bytes")
        if not message.get("more_body", False):
            self.complete = True
        if self.kept is not None:
            if self.received <= self._keep_limit:
                self.kept.append(chunk)
            else:
                self.kept = None
        return chunk

    async def read(self) -> bytes:
        chunks = []
        while not self.complete:
            chunks.append(await self._next())
        return b"".join(chunks)

    async def stream(self) -> AsyncIterator[bytes]:
        while not self.complete:
            if chunk := await self._next():
                yield chunk

    def replay(self) -> bytes | None:
        """The whole body if it was read to the end and kept, else None (the request cannot be replayed)."""
        return b"".join(self.kept) if self.complete and self.kept is not None else None


def replayable_body(body: RequestBody, reader: RequestBodyReader | None) -> tuple[bool, bytes | None]:
    """Whether a request can be sent again, and the body to send: none, read whole, or streamed and kept."""
    if reader is None or isinstance(body, bytes):
        return True, body if isinstance(body, bytes) else None
    replay = reader.replay()
    return replay is not None, replay
