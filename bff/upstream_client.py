"""The data-plane HTTP client: HTTP/1.1 over asyncio transports, answers parsed by httptools (llhttp).

Every proxied request pays for this module, so it does only what a reverse proxy needs. Issue 6 measured, in one
run against the benchmark's nginx upstream (32 concurrent requests, one core, uvloop): a shared
``aiohttp.ClientSession`` at 70-100 µs of CPU per request, a protocol on the event loop's transports with the
llhttp parser at 11-13 µs. aiohttp spends the difference on what a proxy never uses (cookie jar, redirects,
tracing, URL and header objects, a timeout context per read). The answer is still parsed by llhttp, the parser of
Node.js and of uvicorn's httptools mode: nothing here parses HTTP by hand. The request side is written out, after
checks that no name, value or target can break out of its line (a token or a header an IdP or config could
control, with a CR or LF in it, would be a request-smuggling vector). ``websocket_client`` keeps aiohttp for the
dev server's WebSockets: a handful per developer, not the data plane.

Failures are translated where they enter, in the manner of httpx's ``map_httpcore_exceptions``, always
``raise ... from exc`` with fixed messages (no URL, query string, header or token ever reaches one):

- connect refused/reset, a broken, garbled or oversized answer, a TLS failure -> ``UpstreamError`` (502)
- connect or read timeout (the route's ``connect_timeout``/``timeout``)       -> ``UpstreamTimeout`` (504)

A pass-through: bytes and ``Content-Encoding`` arrive untouched, no cookies are kept (an upstream's ``Set-Cookie``
must never become state shared between users), redirects are never followed (a 3xx is the SPA's business), no
header is invented but ``Host`` and the body framing, TLS verification stays on (a route's private CA becomes a
cached ``SSLContext``). The target is sent exactly as given: the proxy has already vetted the raw path, and
re-quoting or dot-segment normalisation here would undo that vetting.

Connections are kept alive per origin (and TLS context) and reused most-recently-used first; an idle one is closed
after ``keepalive_timeout``. A request is sent again at most once, always on a new connection (a pooled sibling may
be just as stale), and only when the upstream cannot have acted on it: a reused connection failed before any byte of
the answer arrived, and either the kernel refused the very first write (the peer had reset the connection: nothing
of the request left) or the method is idempotent (RFC 9110 9.2.2) with a body that can be sent again. A timeout is
never a reason to resend: the upstream may be working on the request.

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
import functools
import re
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import cast

import httptools

from bff.errors import UpstreamError, UpstreamTimeout

RequestBody = bytes | AsyncIterable[bytes] | None

#: RFC 9110 9.2.2: a request with one of these methods may be sent again after a connection failure.
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: Methods whose request without a body still says ``Content-Length: 0`` (RFC 9110 8.6: a user agent SHOULD).
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: The answer's head (status lines and header fields of interim and final answers together), and the bytes of a
#: chunked body that carry no data between two that do; more is refused (llhttp itself sets no limit).
MAX_HEADER_BYTES = 64 * 1024
#: Idle connections kept per origin, more are closed when released: enough for a burst of concurrent requests to
#: find its connections again in the next burst, few enough that a spike cannot hold file descriptors for long.
MAX_IDLE_PER_ORIGIN = 1024
#: RFC 9110 5.6.2 ``token``: what a field name may be.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: A request target (RFC 9112 3.2) is visible ASCII: no space, no control character, nothing beyond 0x7E.
_BAD_TARGET = re.compile(r"[^\x21-\x7e]")


@dataclass(frozen=True, slots=True)
class TransportOptions:
    """Per-route transport settings, built once per route with :meth:`UpstreamClient.options`."""

    connect_timeout: float
    #: Bounds each wait for the upstream: for the answer's headers, then for every later read of its body; restarted
    #: by every chunk of a streamed request body while one is being sent.
    read_timeout: float
    #: ``True``: the default context (system CAs, hostname checked); else a route's own context.
    ssl: ssl.SSLContext | bool


@dataclass(frozen=True, slots=True)
class _Origin:
    """Where a URL's requests go, from the part of the URL before its path (cached: routes have few origins)."""

    https: bool
    host: str
    port: int
    #: The ``Host`` header: the authority as written, default port left out (RFC 9110 7.2).
    authority: str


@functools.lru_cache(maxsize=256)
def _origin(prefix: str) -> _Origin:
    scheme, sep, authority = prefix.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https") or not authority or "@" in authority:
        raise ValueError("not an absolute http(s) URL without credentials")
    default = 443 if scheme == "https" else 80
    if authority.startswith("["):  # an IPv6 literal
        host, bracket, rest = authority[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError("malformed authority")
    else:
        host, _, port_text = authority.partition(":")
    port = int(port_text) if port_text else default
    if not host or not 0 < port < 65536:
        raise ValueError("malformed authority")
    shown = f"[{host}]" if ":" in host else host
    return _Origin(scheme == "https", host, port, shown if port == default else f"{shown}:{port}")


def _split_url(url: str) -> tuple[_Origin, str]:
    """The origin and the request target (path and query) of an absolute URL, without re-encoding anything."""
    start = url.find("://")
    end = len(url)
    for delimiter in "/?#":
        at = url.find(delimiter, start + 3 if start >= 0 else 0)
        if at != -1 and at < end:
            end = at
    origin = _origin(url[:end])
    target = url[end:].partition("#")[0]
    if not target.startswith("/"):
        target = "/" + target
    if _BAD_TARGET.search(target):
        raise ValueError("the request target holds a character that cannot be sent")
    return origin, target


@functools.lru_cache(maxsize=1024)
def _checked_name(name: str) -> str:
    """A header name, lower-cased, once it is known to be a ``token``."""
    if not _TOKEN.fullmatch(name):
        raise ValueError("a header name is not an RFC 9110 token")
    return name.lower()


def _request_head(
    method: str, target: str, authority: str, headers: Sequence[tuple[str, str]], body: RequestBody
) -> tuple[bytes, int | None]:
    """The request line and header block, and the Content-Length a streamed body must match (None: chunked).

    Framing is bff's: ``Host``, ``Content-Length`` and ``Transfer-Encoding`` given by the caller are replaced by what
    the body is (a length that disagreed with the body would be a request-smuggling vector)."""
    if not _TOKEN.fullmatch(method):
        raise ValueError("the method is not an RFC 9110 token")
    lines = [f"{method} {target} HTTP/1.1\r\nhost: {authority}\r\n"]
    declared: str | None = None
    for raw_name, value in headers:
        name = _checked_name(raw_name)
        if name == "content-length":
            declared = value
            continue
        if name in ("host", "transfer-encoding"):
            continue
        lines.append(f"{name}: {value}\r\n")
    length: int | None = None
    if isinstance(body, bytes):
        lines.append(f"content-length: {len(body)}\r\n")
    elif body is None:
        if method in _BODY_METHODS:
            lines.append("content-length: 0\r\n")
    elif declared is not None and declared.isdigit():
        length = int(declared)
        lines.append(f"content-length: {length}\r\n")
    else:
        lines.append("transfer-encoding: chunked\r\n")
    lines.append("\r\n")
    head = "".join(lines)
    # Every CR and LF must be one of the line ends written above; NUL is never allowed (RFC 9110 5.5).
    ends = len(lines) + 1  # the first entry holds two lines: the request line and Host
    if head.count("\r") != ends or head.count("\n") != ends or "\x00" in head:
        raise ValueError("a header value holds CR, LF or NUL")
    return head.encode("latin-1"), length


class _Connection(asyncio.Protocol):
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
            self._break(UpstreamError("the upstream sent more than one answer"))
            return
        try:
            self._feed(parser, data)
        except httptools.HttpParserUpgrade as exc:
            self._break(UpstreamError("the upstream switched protocols unasked"), exc)
        except httptools.HttpParserError as exc:
            self._break(UpstreamError("the upstream sent a malformed answer"), exc)

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

    def _break(self, error: UpstreamError, cause: BaseException | None = None) -> None:
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


class UpstreamResponse:
    """A streamed upstream answer. Its owner must call :meth:`release` or :meth:`close` (try/finally)."""

    __slots__ = ("_client", "_connection", "_origin_key", "headers", "status")

    def __init__(self, connection: _Connection, client: UpstreamClient, origin_key: tuple[object, ...]) -> None:
        self._connection: _Connection | None = connection
        self._client = client
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
            self._client._release(self._origin_key, connection)

    def close(self) -> None:
        """Abandon the answer: its connection is closed, never reused."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


class UpstreamClient:
    """One keep-alive connection pool for all routes. Create once per process; ``await aclose()`` at shutdown."""

    def __init__(self, *, keepalive_timeout: float = 30.0, read_bufsize: int = 2**16) -> None:
        # No cap on connections: concurrency is bounded by the server's connection limit, and a cap here would let
        # a few long SSE streams starve every other route (waiting for a slot counts as connect time).
        self._keepalive_timeout = keepalive_timeout
        self._read_bufsize = read_bufsize
        self._idle: dict[tuple[object, ...], list[_Connection]] = {}
        self._ssl_contexts: dict[str, ssl.SSLContext] = {}
        self._default_ssl: ssl.SSLContext | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    def options(self, *, connect_timeout: float, timeout: float, ca_bundle: str | None = None) -> TransportOptions:
        """Transport settings for one route. ``timeout`` bounds each wait for the upstream (the answer's headers and
        every later read), not the whole exchange, so a long download or an SSE stream that keeps talking lives on."""
        context: ssl.SSLContext | bool = True
        if ca_bundle:
            if ca_bundle not in self._ssl_contexts:  # one context per bundle, shared by the routes that name it
                self._ssl_contexts[ca_bundle] = ssl.create_default_context(cafile=ca_bundle)
            context = self._ssl_contexts[ca_bundle]
        return TransportOptions(connect_timeout=connect_timeout, read_timeout=timeout, ssl=context)

    def _context(self, options: TransportOptions) -> ssl.SSLContext:
        if isinstance(options.ssl, ssl.SSLContext):
            return options.ssl
        if self._default_ssl is None:
            self._default_ssl = ssl.create_default_context()  # system CAs, hostname checked
        return self._default_ssl

    async def send(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: RequestBody,
        options: TransportOptions,
    ) -> UpstreamResponse:
        """Send one request and return as soon as the answer's headers have arrived; the body streams later.

        ``url`` must already be percent-encoded: it is sent byte for byte. ``body`` is bytes, an async iterable
        (sent chunked unless ``headers`` carries a Content-Length) or None.
        """
        try:
            origin, target = _split_url(url)
            head, length = _request_head(method, target, origin.authority, headers, body)
        except (ValueError, UnicodeEncodeError) as exc:
            raise UpstreamError("the request cannot be sent upstream: a header or the target is malformed") from exc
        context = self._context(options) if origin.https else None
        key = (origin.host, origin.port, id(context) if context is not None else None)
        connection = self._idle_connection(key)
        resent = False
        while True:
            if connection is None:
                connection = await self._connect(origin, context, options)
            try:
                self._start(connection, method, head, body, length, options)
                await connection.wait_headers()
            except UpstreamError as exc:
                connection.close()
                if not resent and _may_resend(exc, connection, method, body):
                    resent = True
                    connection = None  # a new connection: a pooled sibling may be just as stale
                    continue
                raise
            except BaseException:
                connection.close()
                raise
            return UpstreamResponse(connection, self, key)

    def _start(
        self,
        connection: _Connection,
        method: str,
        head: bytes,
        body: RequestBody,
        length: int | None,
        options: TransportOptions,
    ) -> None:
        transport = connection.transport
        if connection.closed or transport is None or transport.is_closing():
            connection.unsent = True
            error = UpstreamError("the upstream could not be reached or broke the connection")
            error.__cause__ = ConnectionResetError("the connection closed while idle")
            raise error
        connection.start(method == "HEAD", options.read_timeout)
        small = isinstance(body, bytes) and len(body) <= 16384
        transport.write(head + body if small and isinstance(body, bytes) else head)
        if transport.is_closing():
            # The first write failed at once (the peer had reset the connection): no byte of the request left.
            connection.unsent = True
            error = UpstreamError("the upstream could not be reached or broke the connection")
            error.__cause__ = ConnectionResetError("the upstream reset the connection before the request")
            raise error
        if isinstance(body, bytes):
            if not small:
                transport.write(body)
        else:
            if body is not None:
                connection.writer = asyncio.get_running_loop().create_task(_write_body(connection, body, length))

    async def _connect(self, origin: _Origin, context: ssl.SSLContext | None, options: TransportOptions) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(options.connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop, self._read_bufsize),
                    origin.host,
                    origin.port,
                    ssl=context,
                    server_hostname=origin.host if context is not None else None,
                )
        except TimeoutError as exc:
            raise UpstreamTimeout("connecting to the upstream timed out") from exc
        except (OSError, ssl.SSLError, ssl.CertificateError) as exc:
            raise UpstreamError("the upstream could not be reached or broke the connection") from exc
        return connection

    # --- the pool --------------------------------------------------------------------------------------------------

    def _idle_connection(self, key: tuple[object, ...]) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if not connection.closed:
                connection.reused = True
                return connection
        return None

    def _release(self, key: tuple[object, ...], connection: _Connection) -> None:
        if self._closed or not connection.reusable:
            connection.close()
            return
        connection.reset()
        idle = self._idle.setdefault(key, [])
        if len(idle) >= MAX_IDLE_PER_ORIGIN:
            connection.close()
            return
        loop = connection.loop
        connection.idle_since = loop.time()
        idle.append(connection)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._keepalive_timeout / 2, self._sweep)

    def _sweep(self) -> None:
        """Close the connections idle for longer than ``keepalive_timeout``; runs while any connection is idle."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        horizon = loop.time() - self._keepalive_timeout
        for key, idle in list(self._idle.items()):
            keep = [c for c in idle if not c.closed and c.idle_since > horizon]
            for connection in idle:
                if connection not in keep:
                    connection.close()
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        if self._idle:
            self._sweeper = loop.call_later(self._keepalive_timeout / 2, self._sweep)

    def idle_connections(self) -> int:
        """How many kept-alive connections wait for a request (for tests and diagnostics)."""
        return sum(len(idle) for idle in self._idle.values())

    async def aclose(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
        # Let the transports (TLS ones included) finish closing before the loop goes away.
        await asyncio.sleep(0)


def _may_resend(error: UpstreamError, connection: _Connection, method: str, body: RequestBody) -> bool:
    """Whether a failed request may go out once more: only if the upstream cannot have acted on it."""
    if isinstance(error, UpstreamTimeout) or not connection.reused:
        return False  # a timeout: the upstream may still be working on it
    if connection.unsent:
        return True  # not one byte left (a streamed body was not read either)
    if connection.received_any:
        return False  # answered in part: the upstream has acted
    # The upstream closed as the request left (its keep-alive timeout): safe only to repeat (RFC 9110 9.2.2).
    return method in _IDEMPOTENT and (body is None or isinstance(body, bytes))


class _BodyMismatch(ValueError):
    """A streamed body that is longer or shorter than the Content-Length it was sent with."""


async def _write_body(connection: _Connection, body: AsyncIterable[bytes], length: int | None) -> None:
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
        connection._break(error)


async def _stream_body(connection: _Connection, body: AsyncIterable[bytes], length: int | None) -> None:
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
