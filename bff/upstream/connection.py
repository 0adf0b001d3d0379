"""One keep-alive connection to an upstream: an ``asyncio.Protocol`` whose answers llhttp parses (httptools).

An upstream is hostile until proven otherwise, and a keep-alive connection is shared by every user of a route, so
one stray byte could become another user's answer. The parser is told nothing is expected after the end of an
answer: a second answer that starts in the same read breaks the connection before its status line is parsed, and
any byte on an idle connection closes it. An answer that announced a body it cannot have (a HEAD, 204 or 304 with a
non-zero ``Content-Length`` or a ``Transfer-Encoding``) is delivered without one and its connection closed, because
the announced bytes may still be on their way. An interim (1xx) answer announcing content is refused (RFC 9110 8.6,
15.2). A ``Transfer-Encoding`` whose final coding is not ``chunked`` delimits the body by close (RFC 9112 6.3 item
4). The answer's head, interim answers included, is capped at ``MAX_HEADER_BYTES`` counted as bytes arrive, and so are
the bytes of a chunked body that carry no data (chunk lines, extensions, trailers): an endless head costs one cap of
memory, not what the upstream chose to send.

The route's ``timeout`` bounds idleness, not duration: the wait for the answer restarts whenever a streamed request
body makes progress (a chunk handed to the socket), so a slow upload lives as long as it moves. The timer is re-armed
lazily when it fires, so progress costs a clock read per chunk, not a timer.

Flow control both ways: the answer's body is buffered up to ``read_bufsize`` bytes, then the socket stops being
read until the proxy has passed the bytes on; a streamed request body waits while the socket's write buffer is full.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from typing import cast

import httptools

from bff.errors import UpstreamError, UpstreamTimeout, UpstreamTLSError

#: The answer's head (status lines and header fields of interim and final answers together), and the bytes of a
#: chunked body that carry no data between two that do; more is refused (llhttp itself sets no limit).
MAX_HEADER_BYTES = 64 * 1024


class Connection(asyncio.Protocol):
    """One keep-alive connection to an upstream, carrying one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, read_limit: int) -> None:
        self.loop = loop
        self._read_limit = read_limit
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        #: The current request provably never left: the connection was closed before, or the first write refused.
        self.unsent = False
        #: Loop time of the last progress of a streamed request body (a chunk handed to the transport).
        self.progress = 0.0
        # The current exchange.
        self._parser: httptools.HttpResponseParser | None = None
        self._head_request = False
        self._interim = False
        self._head_bytes = 0
        self._gap = 0
        self._fed_body = 0
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.done = False
        self.keep_alive = False
        self.received_any = False
        self._framed = True
        self._body: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._reading_paused = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._read_timeout = 0.0
        self._drain: asyncio.Future[None] | None = None
        self._write_paused = False
        self.writer: asyncio.Task[None] | None = None

    # --- asyncio.Protocol ----------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without inheriting from it: no isinstance check here.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        parser = self._parser
        if parser is None or self.done:
            # Bytes nobody asked for (on an idle connection, or after a complete answer): the connection is unusable.
            self.fail_and_close(UpstreamError("the upstream sent more than one answer"))
            return
        try:
            self._feed(parser, data)
        except httptools.HttpParserUpgrade as exc:
            self.fail_and_close(UpstreamError("the upstream switched protocols unasked"), exc)
        except httptools.HttpParserError as exc:
            self.fail_and_close(UpstreamError("the upstream sent a malformed answer"), exc)

    def _feed(self, parser: httptools.HttpResponseParser, data: bytes) -> None:
        """Parse what arrived, within the caps: raises ``HttpParserError`` for an answer that broke one."""
        if self.headers_done:
            self._fed_body = 0
            parser.feed_data(data)
            # Bytes that carried no body data since the last that did (chunk lines, extensions, trailers).
            fed = self._fed_body
            self._gap = (0 if fed else self._gap) + len(data) - fed
            if self._gap > MAX_HEADER_BYTES:
                raise httptools.HttpParserError("chunk framing or trailer fields too large")
            return
        room = MAX_HEADER_BYTES - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            parser.feed_data(data)
            return
        # Feed no more than the cap allows while the head is incomplete: the parser never holds more than that.
        view = memoryview(data)
        self._head_bytes = MAX_HEADER_BYTES
        parser.feed_data(view[:room])
        if not self.headers_done:
            raise httptools.HttpParserError("answer head too large")
        if self.done:
            raise httptools.HttpParserError("bytes after the end of the answer")
        self._fed_body = 0
        parser.feed_data(view[room:])

    def eof_received(self) -> bool:
        return False  # close the transport: HTTP/1.1 has no use for a half-closed connection

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._parser is None or self.done:
            return
        if self.headers_done and not self._framed and exc is None:
            self._finish()  # a body delimited by the connection closing (RFC 9112 6.3 item 8) is complete
            return
        if isinstance(exc, ssl.SSLError):
            # TLS 1.3 (RFC 8446 4.4.2.4): a server refuses the client's certificate after the client's side of the
            # handshake is done, with an alert that arrives here, on the first read.
            error: UpstreamError = UpstreamTLSError(
                "the TLS connection to the upstream failed (did it refuse the client certificate?)"
            )
        else:
            error = UpstreamError("the upstream could not be reached or broke the connection")
        error.__cause__ = exc or ConnectionResetError("the upstream closed the connection")
        self._fail(error)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # --- httptools callbacks -------------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.headers_done:  # a second answer, to no request: not one byte of it is parsed
            raise httptools.HttpParserError("bytes after the end of the answer")
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.headers_done:
            return  # trailer fields of a chunked answer: not forwarded
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        status = self._parser.get_status_code()
        if status == 101:  # bff never asks to switch protocols (Upgrade is hop-by-hop and dropped)
            raise httptools.HttpParserUpgrade("101 Switching Protocols to a request that asked for none")
        length: bytes | None = None
        coding: bytes | None = None
        for name, value in self.headers:
            lower = name.lower()
            if lower == b"content-length":
                length = value
            elif lower == b"transfer-encoding":
                coding = value  # the last field line holds the final coding
        if status < 200:  # 100 Continue, 103 Early Hints: interim, the real answer follows
            if length is not None or coding is not None:  # RFC 9110 8.6, 15.2: a 1xx has no content to announce
                raise httptools.HttpParserError("an interim answer announced content")
            self._interim = True
            return
        self.status = status
        self.headers_done = True
        if self._head_request or status in (204, 304):
            self._framed = True
            # RFC 9110 9.3.2, 15.3.5, 15.4.5: no body follows, whatever was announced. An announced one may still be
            # sent by a non-compliant upstream: such a connection is never reused.
            announced = coding is not None or (length is not None and length.strip() != b"0")
            self.keep_alive = not announced and self._parser.should_keep_alive()
        else:
            # RFC 9112 6.3: chunked as the final coding frames the body; another final coding leaves it to the close.
            chunked = coding is not None and coding.rpartition(b",")[2].strip().lower() == b"chunked"
            self._framed = chunked or (coding is None and length is not None)
            self.keep_alive = self._framed and self._parser.should_keep_alive()
        if self._head_request:
            self._finish()  # no body follows, whatever Content-Length says (RFC 9110 9.3.2)
        else:
            self._wake()

    def on_body(self, body: bytes) -> None:
        if self.done:  # the body of an answer that may have none (a HEAD): never reuse this connection
            self.keep_alive = False
            return
        self._fed_body += len(body)
        self._body.append(body)
        self._buffered += len(body)
        if self._buffered >= self._read_limit and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._finish()

    # --- the exchange ----------------------------------------------------------------------------------------------

    def start(self, head_request: bool, read_timeout: float) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._head_request = head_request
        self._read_timeout = read_timeout
        self._interim = False
        self.headers_done = False
        self.done = False
        self.received_any = False
        self.unsent = False
        self.progress = 0.0
        self._head_bytes = 0
        self._gap = 0
        self.status = 0
        self.headers = []
        self._error = None

    def _finish(self) -> None:
        self.done = True
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self._wake()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def fail_and_close(self, error: UpstreamError, cause: BaseException | None = None) -> None:
        """The connection cannot go on: fail the exchange unless its answer was complete, and close."""
        if cause is not None:
            error.__cause__ = cause
        if not self.done:
            self._fail(error)
        self.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_timeout(self) -> None:
        self._timer = None
        writer = self.writer
        if writer is not None and not writer.done():
            # The request body is still moving: the timeout bounds idleness, counted from its last progress.
            deadline = self.progress + self._read_timeout
            if deadline > self.loop.time():
                self._timer = self.loop.call_at(deadline, self._on_timeout)
                return
        error = UpstreamTimeout(
            "the upstream stopped sending within the route's timeout"
            if self.headers_done
            else "the upstream did not answer within the route's timeout"
        )
        error.__cause__ = TimeoutError()
        self._fail(error)
        self.close()

    async def _wait(self) -> None:
        waiter = self._waiter = self.loop.create_future()
        self._timer = self.loop.call_later(self._read_timeout, self._on_timeout)
        try:
            await waiter
        finally:
            self._waiter = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    async def wait_headers(self) -> None:
        while not self.headers_done:
            if self._error is not None:
                raise self._error
            await self._wait()

    async def read_chunk(self) -> bytes:
        while not self._body:
            if self._error is not None:
                raise self._error
            if self.done:
                return b""
            await self._wait()
        if len(self._body) == 1:
            chunk = self._body.popleft()
        else:
            chunk = b"".join(self._body)
            self._body.clear()
        self._buffered = 0
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return chunk

    def at_eof(self) -> bool:
        return self.done and not self._body and self._error is None

    async def drain(self) -> None:
        while self._write_paused and self._error is None and not self.closed:
            self._drain = self.loop.create_future()
            try:
                await self._drain
            finally:
                self._drain = None
        if self._error is not None:
            raise self._error

    @property
    def reusable(self) -> bool:
        return (
            self.done
            and self.keep_alive
            and self._error is None
            and not self.closed
            and not self._body
            and (self.writer is None or self.writer.done())
        )

    def reset(self) -> None:
        """Back to idle after a complete exchange."""
        self._parser = None
        self.writer = None
        self.headers = []
        self.received_any = False

    def close(self) -> None:
        self.closed = True
        if self.writer is not None and not self.writer.done():
            self.writer.cancel()
        if self.transport is not None:
            self.transport.close()
