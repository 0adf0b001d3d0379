"""The proxy: a raw ASGI app that forwards ``/api/...`` calls to their route's upstream with a bearer token.

Raw ASGI and one shared keep-alive client (``bff.upstream_client``), no framework objects: issue 6 measured
Starlette + httpx at ~470 requests/s on the reference box and raw ASGI + aiohttp at ~5,800; the client of its own
cut the CPU of a request further. Everything that depends only on the
route is computed once, in ``_Route``; a request costs one pass over its headers.

One request, in order (every refusal is JSON from ``bff.errors`` and happens before any upstream call):

1. ``proxy_paths``: the raw path and query are vetted (400 ``invalid_path``); the route is the longest prefix that
   matches on a segment boundary (404 ``not_found``); the method is allowed (405 with ``Allow``; never TRACE).
2. ``csrf.check_csrf`` (401 ``csrf``), before the token provider is even asked; ``Content-Length`` over the route's
   ``max_body`` (413).
3. ``BearerProvider.bearer()`` for the route's token policy; its ``BffError`` is the answer.
4. The request goes to ``upstream + raw path (prefix stripped) + raw query`` with ``proxy_headers`` hygiene. The body
   streams from ``receive()`` (a chunked body is counted against ``max_body`` as it flows: 413 and the upstream
   request is aborted); a body of at most ``replay_limit`` bytes is kept so the request can be replayed.
5. A 401 with ``WWW-Authenticate: Bearer error="invalid_token"`` (or any 401 on a ``refresh_on_401`` route) to a
   request that carried a token and can be replayed: ``refresh_bearer()`` once and one replay; the second answer
   passes through whatever it is (never a loop).
6. The answer streams back chunk by chunk as it arrives (SSE event by event). A failure after the headers went out
   ends the stream unfinished, so the browser sees a truncated body, never a second response.

The browser leaving (``http.disconnect``) cancels the request task, which abandons the upstream request: once the
request body has been read, a watcher task waits on ``receive()`` for it, from ``WATCH_DELAY`` on (most requests are
done sooner and never pay for a task). ``send()`` after a disconnect may be a silent no-op (uvicorn), so the watcher
is what stops an endless SSE stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from ipaddress import IPv4Network, IPv6Network
from typing import Protocol

from bff.config import HTTP_METHODS, RouteSettings, normalize_prefix
from bff.csrf import check_csrf
from bff.errors import BffError, MethodNotAllowed, NotFound, PayloadTooLarge, UpstreamError
from bff.proxy_headers import (
    ForwardingPolicy,
    IncomingHeaders,
    is_invalid_token_challenge,
    read_request_headers,
    request_drop_set,
    response_headers,
)
from bff.proxy_paths import check_path, check_query
from bff.responses import send_error
from bff.types import Receive, Scope, Send
from bff.upstream_client import RequestBody, UpstreamClient, UpstreamResponse

logger = logging.getLogger(__name__)

ErrorHeaders = Callable[[BffError], list[tuple[bytes, bytes]]]


class BearerProvider(Protocol):
    """The seam to sessions and tokens (implemented above the proxy's layer, in the app composition)."""

    async def bearer(self, scope: Scope, route: RouteSettings) -> str | None:
        """The access token to send under ``route.token``, or None to forward anonymously.

        Raises ``Unauthenticated``/``SessionExpired``/``ServiceUnavailable``: the proxy answers with the error.
        """
        ...

    async def refresh_bearer(self, scope: Scope, route: RouteSettings, rejected: str) -> str | None:
        """Called once after the upstream answered 401 to ``rejected``: a fresh token, or None (no retry)."""
        ...


def _no_headers(exc: BffError) -> list[tuple[bytes, bytes]]:
    return []


class _ClientGone(Exception):
    """The browser disconnected while its request body was being read."""


class _Route:
    """A route with everything precomputed that does not depend on the request."""

    __slots__ = ("allow", "base", "drop", "extra", "max_body", "methods", "options", "prefix", "settings", "strip")

    def __init__(self, settings: RouteSettings, client: UpstreamClient) -> None:
        self.settings = settings
        prefix = normalize_prefix(settings.path)
        self.prefix = b"" if prefix == "/" else prefix.encode("ascii")
        self.strip = len(self.prefix) if settings.strip_prefix else 0
        self.base = settings.upstream.rstrip("/")
        # "All methods" means the ones config accepts: never TRACE, which would echo the request, bearer token
        # included, back to the caller (OWASP "Cross-Site Tracing"), nor CONNECT or extension methods.
        methods = tuple(m.upper() for m in settings.methods) or HTTP_METHODS
        self.methods = frozenset(methods)
        self.allow = ", ".join(methods).encode("ascii")
        self.max_body = settings.max_body
        self.drop = request_drop_set(settings.remove_headers, settings.set_headers)
        self.extra = [(name.lower(), value) for name, value in settings.set_headers.items()]
        self.options = client.options(
            connect_timeout=settings.connect_timeout, timeout=settings.timeout, ca_bundle=settings.ca_bundle
        )

    def matches(self, raw_path: bytes) -> bool:
        n = len(self.prefix)
        return raw_path.startswith(self.prefix) and (len(raw_path) == n or raw_path[n] == 0x2F)  # "/"


class _RequestBody:
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
            raise _ClientGone
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


def _replayable(body: RequestBody, reader: _RequestBody | None) -> tuple[bool, bytes | None]:
    """Whether a request can be sent again, and the body to send: none, read whole, or streamed and kept."""
    if reader is None or isinstance(body, bytes):
        return True, body if isinstance(body, bytes) else None
    replay = reader.replay()
    return replay is not None, replay


#: How long a request runs before a task starts watching for the browser leaving. Most answers are complete sooner,
#: and a task per request costs more CPU than the rest of the proxy's own work (issue 6); a timer costs next to
#: nothing. A browser that leaves is noticed at most this much later.
WATCH_DELAY = 0.05


class _DisconnectWatch:
    """Cancels the request's task when the browser disconnects, abandoning the upstream request with it."""

    __slots__ = ("_receive", "_task", "_timer", "_watcher", "finished", "fired")

    def __init__(self) -> None:
        self._task = asyncio.current_task()
        self._receive: Receive | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.finished = False
        self.fired = False

    def start(self, receive: Receive) -> None:
        """Call only once the request body has been read: ``receive()`` then yields nothing but the disconnect.
        The watcher task itself starts ``WATCH_DELAY`` later, if the request is still running then."""
        if self._receive is None and self._task is not None:
            self._receive = receive
            self._timer = asyncio.get_running_loop().call_later(WATCH_DELAY, self._spawn, receive)

    def _spawn(self, receive: Receive) -> None:
        self._timer = None
        if not self.finished:
            self._watcher = asyncio.get_running_loop().create_task(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        # At most the (empty) body message nobody read, then the disconnect. Never loop on receive(): a server that
        # kept answering at once would starve the event loop.
        for _ in range(2):
            if (await receive())["type"] == "http.disconnect":
                # A server may also report "disconnect" once the response is complete: that is not the browser leaving.
                if not self.finished and self._task is not None:
                    self.fired = True
                    self._task.cancel()
                return

    def stop(self) -> None:
        self.finished = True
        if self._timer is not None:
            self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()


class Proxy:
    """Raw ASGI app for the configured routes (see the module docstring for what each request goes through)."""

    def __init__(
        self,
        routes: Sequence[RouteSettings],
        client: UpstreamClient,
        bearer: BearerProvider,
        *,
        public_origin: str,
        trusted_proxies: Sequence[IPv4Network | IPv6Network],
        error_headers: ErrorHeaders = _no_headers,
        replay_limit: int = 64 * 1024,
    ) -> None:
        # Longest prefix first, so the first match is the most specific route.
        self._routes = sorted((_Route(r, client) for r in routes), key=lambda r: len(r.prefix), reverse=True)
        self._client = client
        self._bearer = bearer
        self._public_origin = public_origin
        self._forwarding = ForwardingPolicy(public_origin, trusted_proxies)
        self._error_headers = error_headers
        self._replay_limit = replay_limit

    def match(self, path: str) -> RouteSettings | None:
        """The route for a path: prefix match on segment boundaries, longest prefix wins."""
        route = self._match(path.encode("utf-8"))
        return None if route is None else route.settings

    def _match(self, raw_path: bytes) -> _Route | None:
        for route in self._routes:
            if route.matches(raw_path):
                return route
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # pragma: no cover - the app routes only HTTP here
            raise NotImplementedError(f"the proxy does not handle {scope['type']!r} scopes")
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        query: bytes = scope.get("query_string", b"")
        try:
            check_path(raw_path)
            check_query(query)
            route = self._match(raw_path)
            if route is None:
                raise NotFound("no route for this path")
            if scope["method"] not in route.methods:
                refusal = MethodNotAllowed(f"{scope['method']} is not allowed on this route")
                await self._refuse(send, refusal, [(b"allow", route.allow)])
                return
            incoming = read_request_headers(scope["headers"], route.drop)
            check_csrf(incoming.guard, self._public_origin)
            if incoming.content_length is not None and incoming.content_length > route.max_body:
                raise PayloadTooLarge(f"the request body exceeds {route.max_body} bytes")
            token = await self._bearer.bearer(scope, route.settings)
        except BffError as exc:
            await self._refuse(send, exc)
            return

        url = route.base + raw_path[route.strip :].decode("ascii")
        if query:
            url += "?" + query.decode("ascii")
        headers = incoming.forward
        client = scope.get("client")
        headers += self._forwarding.headers(client[0] if client else None, incoming.forwarding)
        headers += route.extra
        if token is not None:
            headers.append(("authorization", "Bearer " + token))

        watch = _DisconnectWatch()
        try:
            await self._forward(scope, receive, send, route, url, headers, incoming, token, watch)
        except asyncio.CancelledError:
            if not watch.fired:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # our own cancellation: the browser left, nothing to answer
        finally:
            watch.stop()

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        route: _Route,
        url: str,
        headers: list[tuple[str, str]],
        incoming: IncomingHeaders,
        token: str | None,
        watch: _DisconnectWatch,
    ) -> None:
        method: str = scope["method"]
        reader: _RequestBody | None = None
        body: RequestBody = None
        if incoming.content_length or incoming.chunked:
            reader = _RequestBody(receive, route.max_body, self._replay_limit)
            if incoming.content_length is not None and incoming.content_length <= self._replay_limit:
                try:  # small and of known size: read it whole, which also keeps it for a replay
                    body = await reader.read()
                except _ClientGone:
                    return
                except PayloadTooLarge as exc:  # pragma: no cover - the server enforces Content-Length framing
                    await self._refuse(send, exc)
                    return
            else:
                body = reader.stream()
        if reader is None or reader.complete:
            watch.start(receive)

        response = await self._send(send, method, url, headers, body, route, reader)
        if response is None:
            return
        try:
            if token is not None and response.status == 401 and self._wants_refresh(route, response):
                replayable, replay = _replayable(body, reader)
                if replayable:
                    try:
                        fresh = await self._bearer.refresh_bearer(scope, route.settings, token)
                    except BffError as exc:
                        await self._refuse(send, exc)
                        return
                    if fresh is not None:
                        response.release()
                        headers[-1] = ("authorization", "Bearer " + fresh)
                        response = await self._send(send, method, url, headers, replay, route, None)
                        if response is None:
                            return
            if reader is not None and reader.complete:
                watch.start(receive)
            await self._relay(send, response, route, watch)
        finally:
            if response is not None:
                response.close()  # a no-op after a release; otherwise the connection is not reusable anyway

    @staticmethod
    def _wants_refresh(route: _Route, response: UpstreamResponse) -> bool:
        return route.settings.refresh_on_401 or is_invalid_token_challenge(response.headers)

    async def _send(
        self,
        send: Send,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: RequestBody,
        route: _Route,
        reader: _RequestBody | None,
    ) -> UpstreamResponse | None:
        """The upstream's answer, or None once the browser has been answered (or has left)."""
        try:
            return await self._client.send(method, url, headers, body, route.options)
        except UpstreamError as exc:
            # A failure of our own body stream surfaces as a broken upstream request: report the real cause.
            if reader is not None and reader.too_large:
                await self._refuse(send, PayloadTooLarge(f"the request body exceeds {route.max_body} bytes"))
            elif reader is None or not reader.disconnected:
                logger.warning("proxy %s: %s (%s)", route.settings.path, exc.message, type(exc.__cause__).__name__)
                await self._refuse(send, exc)
            return None

    async def _relay(self, send: Send, response: UpstreamResponse, route: _Route, watch: _DisconnectWatch) -> None:
        start = {
            "type": "http.response.start",
            "status": response.status,
            "headers": response_headers(response.headers),
        }
        try:
            await send(start)
            while True:
                chunk = await response.read_chunk()
                if response.at_eof():
                    watch.finished = True
                    await send({"type": "http.response.body", "body": chunk, "more_body": False})
                    response.release()
                    return
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except UpstreamError as exc:
            # The status line is gone: leave the response unfinished so the browser sees a truncated body.
            logger.warning("proxy %s: %s (%s)", route.settings.path, exc.message, type(exc.__cause__).__name__)
        except OSError:
            pass  # send() failed: the browser is gone; the caller closes the upstream response

    async def _refuse(self, send: Send, exc: BffError, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        await send_error(send, exc, self._error_headers(exc) + (extra or []))
