"""A transport whose writes wait for the end of the event loop's turn and then leave in one ``write``.

uvicorn writes an answer's status line and headers, then its body, as two ``transport.write`` calls, and uvloop
sends each at once. A send on a loopback socket whose peer waits on another core is one of the dearest steps of a
proxied request (it runs the peer's TCP receive path and wakes it). The join costs one ``call_soon`` per answer and no
latency: the bytes leave at the end of the same loop turn.
"""

from __future__ import annotations

import asyncio
from typing import Any

#: Pending bytes beyond this are sent at once: memory stays bounded, and the transport's flow control sees them.
FLUSH_AT = 64 * 1024


class CoalescingTransport:
    """A transport whose writes wait for the end of the event loop's turn and then leave in one ``write``.

    Everything else is the wrapped transport's, except that ``close()`` and ``write_eof()`` send what is pending
    first and ``abort()`` drops it, as they would have for bytes already written."""

    __slots__ = ("_loop", "_pending", "_size", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))
        self._size += len(data)
        if self._size >= FLUSH_AT:
            self.flush()

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        """Send what is pending now (a no-op when nothing is). Bytes for a transport that is closing are dropped,
        as the transport itself would drop them."""
        if not self._pending:
            return
        pending, self._pending, self._size = self._pending, [], 0
        if not self.transport.is_closing():
            self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def is_closing(self) -> bool:
        return self.transport.is_closing()  # asked on every answer: not through __getattr__

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() + self._size

    def write_eof(self) -> None:
        self.flush()
        self.transport.write_eof()

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self._pending, self._size = [], 0
        self.transport.abort()

    def __getattr__(self, name: str) -> Any:
        # is_closing, get_extra_info, pause_reading, resume_reading, set_protocol, ...: the transport's own.
        return getattr(self.transport, name)
