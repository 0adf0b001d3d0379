"""A streamed request body, written onto a connection as declared (``Content-Length``) or chunked (RFC 9112 7.1).

The writer runs as its own task while the answer is awaited, so an upstream may answer (a 413, say) before the body
has been sent. A failure of the body's own source, or a body that disagrees with its declared length, breaks the
connection, which fails the exchange: the upstream must never take a truncated or overlong body for a whole one.
"""

from __future__ import annotations

from collections.abc import AsyncIterable

from bff.errors import UpstreamError
from bff.upstream.connection import Connection


class _BodyMismatch(ValueError):
    """A streamed body that is longer or shorter than the Content-Length it was sent with."""


async def write_body(connection: Connection, body: AsyncIterable[bytes], length: int | None) -> None:
    """Stream a request body: as declared (``length``) or chunked. A failure (the body's own source failing, or a
    length that disagrees) breaks the connection, which fails the exchange: the upstream must never take a
    truncated or overlong body for a whole one."""
    try:
        await _stream_body(connection, body, length)
    except UpstreamError:
        pass  # the connection broke: the exchange has failed already
    except Exception as exc:  # noqa: BLE001 - reported to the exchange, whose owner raises it
        error = UpstreamError("the request body could not be sent upstream")
        error.__cause__ = exc
        connection.fail_and_close(error)


async def _stream_body(connection: Connection, body: AsyncIterable[bytes], length: int | None) -> None:
    transport = connection.transport
    assert transport is not None
    sent = 0
    async for chunk in body:
        if connection.closed:  # the upstream answered (413, say) and hung up: stop reading the browser's upload
            raise UpstreamError("the upstream closed the connection before the request body was sent")
        if not chunk:
            continue
        sent += len(chunk)
        if length is None:
            transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        elif sent > length:
            raise _BodyMismatch("the request body is longer than its Content-Length")
        else:
            transport.write(chunk)
        connection.progress = connection.loop.time()
        await connection.drain()
        connection.progress = connection.loop.time()
    if length is None:
        transport.write(b"0\r\n\r\n")
    elif sent != length:
        raise _BodyMismatch("the request body is shorter than its Content-Length")
