"""bff's HTTP/1.1 protocol: uvicorn's httptools protocol with three changes.

1. Its transport is a :class:`~bff.serving.transport.CoalescingTransport`: the writes made to a connection in one
   turn of the event loop leave in one send.
2. The edge limits of ``[server]`` (:class:`~bff.serving.limits.EdgeLimits`), enforced before the app is ever reached:

   - the request head (request line, header fields, line ends) may take ``max_request_header_size`` bytes and
     ``max_request_headers`` fields; beyond, 431 and close. The bytes are counted as they arrive, before llhttp
     sees them: a segment that would overflow the head's remaining room is fed only up to that room, so a huge
     header costs no more than the limit in parsing and memory (httptools gathers a field in one ``bytes``). A head
     that begins inside a segment after a pipelined request is charged conservatively (see ``_tail_length``);
   - a head must be complete ``header_timeout`` after its first byte (after the connection opened, for the first
     one): 408 and close. More lines do not move the deadline (slowloris). A keep-alive connection on which no
     next request begins is closed ``keep_alive_timeout`` after the previous answer; a request body that stops
     arriving (no byte for ``body_timeout`` while bff is ready to read: reading not paused by flow control, no
     ``100 Continue`` owed) ends the connection, with 408 if no answer began. Body idleness is sampled (a flag set
     per segment received, read by the timer), so it is detected after one to two ``body_timeout``;
   - a worker holds at most ``max_connections`` connections; one more is answered 503 and closed at once.

   One timer per connection serves both deadlines, checked lazily: the hot path (requests on a busy keep-alive
   connection) sets no timer; it reads the clock when a head begins and when an answer ends.

3. At shutdown (``shutdown()``, called by the server once the listener is closed), a connection whose first request
   has not been answered yet is not closed under it (see :meth:`CoalescingHttpToolsProtocol.shutdown`).

Only the HTTP/1.1 side is changed: a connection that upgrades to a WebSocket hands uvicorn's WebSocket protocol the
real transport, after the bytes still pending.

This subclasses uvicorn internals (``HttpToolsProtocol``'s attributes, callbacks and helpers): pyproject bounds
uvicorn from above, and ``tests/serving/test_uvicorn_internals.py`` names what changed when a new uvicorn moves them.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httptools
from uvicorn.config import Config as UvicornConfig
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from bff.errors import BadRequest, BffError, RequestHeaderTooLarge, RequestTimeout, TooManyConnections
from bff.proxy import error_headers, error_payload
from bff.serving.limits import DEFAULT_LIMITS, EdgeLimits
from bff.serving.transport import CoalescingTransport
from bff.telemetry.metrics import CONNECTIONS_OPEN

#: At shutdown, how long a connection accepted before the listener closed may take to send its first byte.
FRESH_GRACE = 1.0


class _Refused(Exception):
    """Raised from a parser callback to stop llhttp; the refusal to send is in ``_refusal``."""


def _tail_length(data: bytes, start: int, end: int) -> int:
    """An upper bound on the bytes of a request head that began inside ``data[start:end]`` after a message ended
    there and is still incomplete at ``end``: what follows the last ``LF CR LF`` (a head ends with an empty line,
    RFC 9112 2.1, so an incomplete one contains none; a body before it may, which only makes the bound looser)."""
    found = data.rfind(b"\n\r\n", start, end)
    return end - start if found < 0 else end - found - 3


def _error_answer(exc: BffError, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A complete JSON error answer that closes the connection, as the app would render ``exc``."""
    body = json.dumps(error_payload(exc), separators=(",", ":")).encode("utf-8")
    headers = [
        *default_headers,
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("ascii")),
        *error_headers(exc),
        (b"connection", b"close"),
    ]
    return b"".join([STATUS_LINE[exc.status], *(n + b": " + v + b"\r\n" for n, v in headers), b"\r\n", body])


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a :class:`CoalescingTransport`, enforcing :class:`EdgeLimits`."""

    def __init__(
        self,
        config: UvicornConfig,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: EdgeLimits = DEFAULT_LIMITS,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits = limits
        #: The one timer of the connection: the head deadline or the idle deadline, whichever is due first.
        self._deadline: asyncio.TimerHandle | None = None
        #: When the current head's deadline started (its first byte, or the connection's start); None between heads.
        self._head_began: float | None = None
        #: When the last answer ended (the idle deadline's start).
        self._idle_since = 0.0
        #: A message has begun and its head is not complete yet.
        self._mid_head = False
        #: The bytes arriving now are (or may start) a request head, not a body: they count against ``_head_room``.
        self._reading_head = True
        self._head_room = limits.max_head_bytes
        #: A message ended during the current ``feed_data``: a next head may have begun inside the segment.
        self._ended_in_feed = False
        #: Bytes arrived since the timer last looked (body idleness).
        self._active = False
        self._refusal: BffError | None = None
        self._upgraded = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        wrapped: Any = CoalescingTransport(transport, self.loop)
        super().connection_made(wrapped)
        if CONNECTIONS_OPEN.function is None:  # the server's own count (WebSockets included), read at each scrape
            connections = self.connections
            CONNECTIONS_OPEN.set_function(lambda: len(connections))
        if len(self.connections) > self._limits.max_connections:
            self.logger.warning("Connection refused: %d connections open.", len(self.connections) - 1)
            self._refuse(TooManyConnections("too many connections; retry later"))
            return
        now = self.loop.time()
        self._head_began = now
        self._deadline = self.loop.call_at(now + self._limits.header_timeout, self._on_deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)

    # --- bytes in: the head limit -------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._active = True
        if self._reading_head and len(data) > self._head_room:
            if not self._feed_bounded(data):
                return
        else:
            if self._reading_head:
                self._head_room -= len(data)
            if not self._feed(data):
                return
            if self._ended_in_feed:
                self._ended_in_feed = False
                if self._mid_head:
                    self._charge_pipelined_head(data, 0, len(data))
        if not self._reading_head:  # a body is still to come: make sure a check comes within body_timeout
            due = self.loop.time() + self._limits.body_timeout
            deadline = self._deadline
            if deadline is None or deadline.when() > due:
                if deadline is not None:
                    deadline.cancel()
                self._active = False
                self._deadline = self.loop.call_at(due, self._on_deadline)

    def _feed_bounded(self, data: bytes) -> bool:
        """Feed ``data`` in pieces so that llhttp never sees more head bytes than the head's remaining room; False
        as :meth:`_feed`."""
        view = memoryview(data)
        start, end = 0, len(data)
        while start < end:
            if self._reading_head:
                if self._head_room <= 0:
                    self._refuse(RequestHeaderTooLarge("the request head is too large"))
                    return False
                stop = min(end, start + self._head_room)
                self._head_room -= stop - start
            else:
                stop = end
            if not self._feed(view[start:stop]):
                return False
            if self._ended_in_feed:
                self._ended_in_feed = False
                if self._mid_head:
                    self._charge_pipelined_head(data, start, stop)
            start = stop
        return True

    def _charge_pipelined_head(self, data: bytes, start: int, end: int) -> None:
        """A message ended inside ``data[start:end]`` and the next head began there: charge it conservatively."""
        self._head_room = self._limits.max_head_bytes - _tail_length(data, start, end)

    def _feed(self, data: bytes | memoryview) -> bool:
        """Feed llhttp; False once the connection stops speaking HTTP/1.1 here (refused, malformed or upgraded)."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._refusal is None:
                self.logger.warning("Invalid HTTP request received.")
            self._refuse(self._refusal or BadRequest("invalid HTTP request"))
            return False
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        return True  # the callbacks never close the transport themselves: a refusal raises and lands above

    def _refuse(self, exc: BffError) -> None:
        """Answer ``exc`` and close, unless that would corrupt an answer in flight. Bad bytes inside the body of the
        request being answered end the connection (its app then sees ``http.disconnect``), with ``exc`` as the
        answer if none has begun. Bad bytes after it (a pipelined request) leave the answers due to be sent, the
        last one closing the connection. Either way nothing more is read or parsed: the head room is spent, so
        every later segment comes back here."""
        in_body = not self._reading_head
        self._refusal = None
        self._reading_head, self._head_room = True, -1
        cycle: Any = self.cycle
        if cycle is None or cycle.response_complete or (in_body and not cycle.response_started and not self.pipeline):
            self.transport.write(_error_answer(exc, self.server_state.default_headers))
            self.transport.close()
        elif in_body:
            self.transport.close()
        else:
            cycle.keep_alive = False

    # --- parser callbacks ---------------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._mid_head = True
        if self._head_began is None:
            self._head_began = self.loop.time()

    def on_headers_complete(self) -> None:
        if len(self.headers) > self._limits.max_head_fields:
            self._refusal = RequestHeaderTooLarge("too many request header fields")
            raise _Refused
        if self._ended_in_feed and self._head_size() > self._limits.max_head_bytes:
            # A pipelined head that began and ended inside one segment: its room was never charged.
            self._refusal = RequestHeaderTooLarge("the request head is too large")
            raise _Refused
        self._mid_head = False
        self._reading_head = False
        self._head_began = None
        super().on_headers_complete()
        if getattr(self.server_state, "closing", False):  # bff serve is shutting down: this answer is the last
            self.cycle.keep_alive = False

    def _head_size(self) -> int:
        """The fewest bytes the head just parsed can have taken (llhttp and uvicorn trim optional whitespace)."""
        size = len(self.parser.get_method()) + len(self.url) + len(" HTTP/1.1\r\n\r\n") + 1
        for name, value in self.headers:
            size += len(name) + len(value) + 4  # ": " and CRLF
        return size

    def on_message_complete(self) -> None:
        self._reading_head = True
        self._head_room = self._limits.max_head_bytes
        self._ended_in_feed = True
        super().on_message_complete()

    # --- deadlines ----------------------------------------------------------------------------------------------

    def on_response_complete(self) -> None:
        # uvicorn's, with bff's deadline in place of its keep-alive timer, which every byte received would cancel.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        now = self.loop.time()
        self._idle_since = now
        due = now + min(self._limits.keep_alive_timeout, self._limits.header_timeout)
        deadline = self._deadline
        if deadline is not None:
            if deadline.when() <= due:  # a pending check comes soon enough: it re-arms itself, no timer churn
                return
            deadline.cancel()
        self._deadline = self.loop.call_at(due, self._on_deadline)

    def _on_deadline(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self._upgraded:
            return
        cycle: Any = self.cycle
        now = self.loop.time()
        if cycle is not None and not cycle.response_complete:
            if self._reading_head:
                return  # the request has arrived and is being answered: the answer's end arms the next check
            if self._active or self.flow.read_paused or cycle.waiting_for_100_continue:
                self._active = False
                self._deadline = self.loop.call_at(now + self._limits.body_timeout, self._on_deadline)
            else:
                self.logger.info("Request body stopped arriving: 408.")
                self._refuse(RequestTimeout("the request body stopped arriving"))
            return
        if self._head_began is not None:
            due = self._head_began + self._limits.header_timeout
            if now >= due:
                if self._mid_head:
                    self.logger.info("Request head not complete in time: 408.")
                    self._refuse(RequestTimeout("the request head did not arrive in time"))
                else:  # nothing of a request arrived: nobody to answer
                    self.transport.close()
                return
        else:
            due = self._idle_since + self._limits.keep_alive_timeout
            if now >= due:
                self.transport.close()
                return
            due = min(due, now + self._limits.header_timeout)  # a head beginning meanwhile is checked in time
        self._deadline = self.loop.call_at(due, self._on_deadline)

    # --- graceful shutdown ----------------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """The server stopped listening. uvicorn's closes every connection not answering a request; under ``bff
        serve`` (:class:`~bff.serving.server.DrainingServer`, whose state says ``closing``) bff's spares
        those whose next request is arriving: a head partly arrived is read and answered (the answer closes: the
        server state is ``closing``), and a connection accepted just before the listener closed, with
        no byte yet, gets ``FRESH_GRACE`` for its request to arrive, so a client that connected during the drain is
        answered or sees its connection close, never a request lost on a closed socket."""
        if not getattr(self.server_state, "closing", False):  # a plain uvicorn server (tests, the demo): its way
            super().shutdown()
            return
        if self.transport.is_closing() or self._mid_head:
            return  # a head is arriving: it is answered, and that answer closes the connection
        if self.cycle is None:
            self.loop.call_later(FRESH_GRACE, self._close_if_unused)
        else:
            super().shutdown()  # idle after an answer: closed; answering: Connection: close

    def _close_if_unused(self) -> None:
        if self.cycle is None and not self._mid_head and not self.transport.is_closing():
            self.transport.close()

    def handle_websocket_upgrade(self) -> None:
        self._upgraded = True
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        transport: Any = self.transport
        if isinstance(transport, CoalescingTransport):
            transport.flush()
            self.transport = transport.transport  # the WebSocket protocol writes frames on the real transport
        super().handle_websocket_upgrade()
