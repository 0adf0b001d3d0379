"""WebSocket routes (``websocket = true``): the browser's handshake is checked, then relayed to the upstream with the
user's bearer token, and frames cross both ways until one side closes, a limit is hit, or the session ends.

One handshake, in order (every refusal happens before any upstream connection):

1. ``paths`` vets the raw path and query (400), the longest matching route must say ``websocket = true`` (403).
2. ``Origin`` must be exactly ``public_origin``: a browser always sends it on a WebSocket handshake (RFC 6455
   4.1), and cannot add ``X-CSRF`` to one, so a missing or foreign Origin is refused (401 ``csrf``); a
   ``Sec-Fetch-Site`` other than ``same-origin`` too (Cross-Site WebSocket Hijacking).
3. ``SocketSessions.open_socket`` applies the route's token policy: 401 without a session on a ``user`` route.
4. The upstream handshake goes to the route's upstream (``http`` -> ``ws``, ``https`` -> ``wss``) with the browser's
   headers after the HTTP routes' hygiene, ``X-Forwarded-*``, the route's ``set_headers`` and
   ``Authorization: Bearer``; a refused upstream handshake is a 502 to the browser, except a 401 whose
   ``WWW-Authenticate`` asks for a step-up (RFC 9470 3): the browser gets the HTTP routes' 401 ``step_up_required``
   with its ``login_url`` (under the frontend's path prefix).

Refusals are real HTTP answers (JSON ``{"error": ...}``) through the ASGI "WebSocket Denial Response" extension
where the server offers it, else a close with 1008 before the accept (the browser sees a failed handshake).

Relay: one message in flight per direction: a message is read from one side only once the previous one has been
handed to the other (the upstream client's send waits for its buffer to drain; the library stops reading the socket
when ``max_queue`` messages wait). Close codes bff chooses (docs/websockets.md):

- 4401: the session ended (logout here or on any instance, back-channel logout, ``bff sessions revoke``) or its token
  expired and could not be refreshed: found by a re-read of the session every ``session_check``;
- 4408: no message either way for ``idle_timeout``;
- 1009: a message larger than ``max_message`` (RFC 6455 7.4.1);
- 1011 to the browser when the upstream link broke without a Close frame; 1001 to the upstream when bff ends it.

The upstream keeps the token it got in its handshake for the socket's life: refreshing the session's token does not
reach an open socket (there is no way to re-authenticate a WebSocket in RFC 6455); bff instead closes the socket
once that session can no longer get a valid token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
from collections.abc import Callable, Collection, Sequence
from ipaddress import IPv4Network, IPv6Network
from typing import Protocol

from bff.config import RouteSettings
from bff.errors import BffError, CsrfRejected, Forbidden, NotFound, UpstreamError
from bff.proxy.challenges import step_up_refusal
from bff.proxy.csrf import check_same_origin
from bff.proxy.headers import ForwardingPolicy, read_request_headers
from bff.proxy.paths import check_path, check_query
from bff.proxy.responses import error_headers, error_payload
from bff.proxy.routes import Route, longest_first, match_route
from bff.types import PATH_PREFIX, Receive, Scope, Send
from bff.upstream import UpstreamClient
from bff.upstream.websocket import (
    MESSAGE_TOO_BIG,
    HandshakeRefused,
    UpstreamWebSocket,
    WebSocketClient,
    first_of,
    sendable_close_code,
)

logger = logging.getLogger(__name__)

#: The session ended or its token can no longer be refreshed (private-use range, RFC 6455 7.4.2; 401 + 4000).
CLOSE_SESSION_ENDED = 4401
#: No message either way for the route's ``idle_timeout`` (408 + 4000).
CLOSE_IDLE = 4408
#: RFC 6455 7.4.1: the endpoint is going away (bff ends the upstream side).
GOING_AWAY = 1001
#: RFC 6455 7.4.1: policy violation (a refused handshake when the server cannot send an HTTP answer).
POLICY_VIOLATION = 1008

#: The WebSocket handshake's own fields: the client makes a fresh handshake with the upstream (RFC 6455 4.1).
WEBSOCKET_DROP = frozenset(
    {
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"sec-websocket-accept",
    }
)

#: The ASGI extension that lets an app refuse a handshake with an HTTP response (WebSocket Denial Response).
DENIAL_EXTENSION = "websocket.http.response"


class SocketSessions(Protocol):
    """The seam to sessions and tokens for WebSockets (implemented by ``bff.tokens.TokenManager``)."""

    @property
    def acr_values_allowed(self) -> Collection[str]:
        """``[oidc] acr_values_allowed``: an upstream's step-up challenge outside it stays a 502 (RFC 9470 3)."""
        ...

    async def open_socket(self, scope: Scope, route: RouteSettings) -> tuple[str | None, str | None]:
        """``(bearer token or None, session id to watch or None)`` under the route's token policy.

        Raises ``Unauthenticated``/``SessionExpired``/``ServiceUnavailable``: the handshake is refused with it.
        """
        ...

    async def socket_session_alive(self, session_id: str, route: RouteSettings) -> bool:
        """False once the session is gone or its token expired and cannot be refreshed (a refresh is tried first,
        as on HTTP routes). A store or IdP outage while the token is still valid is not an end."""
        ...


class WebSocketProxy:
    """Raw ASGI app for WebSocket handshakes on ``websocket = true`` routes (see the module docstring)."""

    def __init__(
        self,
        routes: Sequence[RouteSettings],
        client: UpstreamClient,
        sessions: SocketSessions,
        *,
        public_origin: str,
        trusted_proxies: Sequence[IPv4Network | IPv6Network],
        error_headers: Callable[[BffError], list[tuple[bytes, bytes]]] | None = None,
        websockets: WebSocketClient | None = None,
    ) -> None:
        # Every route competes for the longest prefix, so a nested HTTP-only route is never shadowed by its parent.
        self._routes = longest_first(Route(r, client) for r in routes)
        self._sessions = sessions
        self._public_origin = public_origin
        self._forwarding = ForwardingPolicy(public_origin, trusted_proxies)
        self._error_headers = error_headers
        # Few messages wait in the library: backpressure reaches the upstream before memory grows.
        self._websockets = websockets or WebSocketClient(max_queue=4)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        query: bytes = scope.get("query_string", b"")
        try:
            check_path(raw_path)
            check_query(query)
            route = match_route(self._routes, raw_path)
            if route is None:
                raise NotFound("no route for this path")
            if not route.settings.websocket:
                raise Forbidden("this route does not accept WebSockets")
            incoming = read_request_headers(scope["headers"], route.drop | WEBSOCKET_DROP)
            if "origin" not in incoming.guard:
                raise CsrfRejected("a WebSocket handshake without Origin is refused")
            check_same_origin(incoming.guard, self._public_origin)
            token, session_id = await self._sessions.open_socket(scope, route.settings)
        except BffError as exc:
            await self._refuse(scope, send, exc)
            return

        url = _ws_url(route.base) + raw_path[route.strip :].decode("ascii")
        if query:
            url += "?" + query.decode("ascii")
        headers = self._forwarding.upstream_headers(incoming, scope.get("client"), route.extra)
        if token is not None:
            headers.append(("authorization", "Bearer " + token))
        settings = route.settings
        try:
            upstream = await self._websockets.connect(
                url,
                headers,
                scope.get("subprotocols") or [],
                connect_timeout=settings.connect_timeout,
                max_size=settings.max_message,
                # The route's own context: its CA bundle and its client certificate (mutual TLS) as on HTTP.
                tls=route.options.ssl if isinstance(route.options.ssl, ssl.SSLContext) else None,
            )
        except UpstreamError as exc:
            logger.warning("websocket %s: %s (%s)", settings.path, exc.message, type(exc.__cause__).__name__)
            await self._refuse(scope, send, self._step_up(scope, exc) or exc)
            return
        try:
            await send({"type": "websocket.accept", "subprotocol": upstream.protocol})
            await _Relay(receive, send, upstream, settings, self._sessions, session_id).run()
        except OSError:
            pass  # the browser is gone (the ASGI server's ClientDisconnected is an OSError)
        finally:
            await upstream.close(GOING_AWAY)

    def _step_up(self, scope: Scope, exc: UpstreamError) -> BffError | None:
        """A 401 step-up challenge of the upstream's handshake as the HTTP routes answer it (RFC 9470 3)."""
        if not isinstance(exc, HandshakeRefused) or exc.upstream_status != 401:
            return None
        return step_up_refusal(exc.upstream_headers, self._sessions.acr_values_allowed, scope.get(PATH_PREFIX, ""))

    async def _refuse(self, scope: Scope, send: Send, exc: BffError) -> None:
        if DENIAL_EXTENSION in (scope.get("extensions") or {}):
            body = _json(error_payload(exc))
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode("ascii")),
                *error_headers(exc),
                *(self._error_headers(exc) if self._error_headers is not None else []),
            ]
            await send({"type": "websocket.http.response.start", "status": exc.status, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": POLICY_VIOLATION})


def _json(payload: dict[str, str | int]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def _ws_url(base: str) -> str:
    """The route's upstream as a WebSocket URL (RFC 6455 3: ``ws``/``wss`` over ``http``/``https``)."""
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :]
    return "ws://" + base.removeprefix("http://")


class _Relay:
    """The frames of one socket both ways, the idle limit and the session watch, until the first of them ends it."""

    __slots__ = ("_closing", "_last", "_receive", "_send", "_session_id", "_sessions", "_settings", "_upstream")

    def __init__(
        self,
        receive: Receive,
        send: Send,
        upstream: UpstreamWebSocket,
        settings: RouteSettings,
        sessions: SocketSessions,
        session_id: str | None,
    ) -> None:
        self._receive = receive
        self._send = send
        self._upstream = upstream
        self._settings = settings
        self._sessions = sessions
        self._session_id = session_id
        self._last = asyncio.get_running_loop().time()
        #: bff closed the browser's side: the browser's answering Close must not reach the upstream as its own.
        self._closing = False

    async def run(self) -> None:
        await first_of(self._browser_to_upstream(), self._upstream_to_browser(), self._watch())

    async def _close_browser(self, code: int) -> None:
        if self._closing:
            return  # one Close per socket: the ASGI server refuses any message after it
        self._closing = True
        with contextlib.suppress(OSError):
            await self._send({"type": "websocket.close", "code": code})

    async def _browser_to_upstream(self) -> None:
        limit = self._settings.max_message
        loop = asyncio.get_running_loop()
        while True:
            message = await self._receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                code = GOING_AWAY if self._closing else sendable_close_code(message.get("code"))
                await self._upstream.close(code)
                return
            if kind != "websocket.receive":
                continue
            text = message.get("text")
            # A str of n characters is at least n bytes of UTF-8: the cheap check first, the exact one when close.
            if text is not None and (len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit)):
                await self._close_browser(MESSAGE_TOO_BIG)
                return
            data = message.get("bytes") or b""
            if text is None and len(data) > limit:
                await self._close_browser(MESSAGE_TOO_BIG)
                return
            self._last = loop.time()
            try:
                if text is not None:
                    await self._upstream.send_text(text)
                else:
                    await self._upstream.send_bytes(data)
            except UpstreamError:
                return  # the upstream went away: its close reaches the browser from the other direction
            self._last = loop.time()

    async def _upstream_to_browser(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            frame = await self._upstream.receive()
            self._last = loop.time()
            if self._closing:
                return  # bff closed the browser's side meanwhile: nothing may follow its Close
            if frame.kind == "text":
                await self._send({"type": "websocket.send", "text": frame.data})
            elif frame.kind == "bytes":
                await self._send({"type": "websocket.send", "bytes": frame.data})
            else:
                await self._close_browser(frame.code)
                return
            self._last = loop.time()

    async def _watch(self) -> None:
        """The idle limit, and every ``session_check`` the session (one store read)."""
        settings = self._settings
        loop = asyncio.get_running_loop()
        # A random first check spreads the store reads of sockets opened together (after a deploy, say).
        next_check = loop.time() + random.random() * settings.session_check  # noqa: S311 - not a secret
        while True:
            now = loop.time()
            idle_left = self._last + settings.idle_timeout - now
            if idle_left <= 0:
                await self._close_browser(CLOSE_IDLE)
                return
            if self._session_id is None:
                await asyncio.sleep(idle_left)
                continue
            if now >= next_check:
                if not await self._alive(self._session_id):
                    await self._close_browser(CLOSE_SESSION_ENDED)
                    return
                next_check = loop.time() + settings.session_check
            await asyncio.sleep(max(0.0, min(idle_left, next_check - loop.time())))

    async def _alive(self, session_id: str) -> bool:
        try:
            return await self._sessions.socket_session_alive(session_id, self._settings)
        except BffError as exc:
            # The store or the IdP is down: the session cannot be judged now; the next check tries again.
            logger.debug("websocket %s: session check failed (%s)", self._settings.path, exc.error)
            return True
