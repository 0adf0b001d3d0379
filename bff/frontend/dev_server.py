"""``[frontend] dev_server``: every request bff does not handle itself goes to the frontend's dev server (Vite,
webpack-dev-server, ...), so the SPA is developed on bff's origin with the real login and the real proxy.

HTTP goes through the data plane's ``UpstreamClient`` (bytes and ``Content-Encoding`` pass untouched, no cookie
jar, redirects not followed); WebSocket upgrades (hot reload: Vite's ``vite-hmr`` subprotocol) through
``WebSocketClient``, offering the browser's subprotocols and accepting the one the dev server picks. Frames are
relayed both ways until either side closes; the close code travels across.

What crosses, with ``bff.proxy.headers``' hygiene in both directions: the browser's ``Cookie`` (bff's session
cookie) and any ``Authorization`` never reach the dev server, nor do hop-by-hop fields, ``X-CSRF``, ``Proxy-*``,
``X-Forwarded-*``; the dev server's ``Set-Cookie`` never reaches the browser. The path and query are sent as
received: dev servers have paths of their own (``/@vite/client``, ``/@fs/...``) that the proxy's strict path rules
would refuse, and this mode is for a developer's machine only.

A dev server that is down is a 502 JSON answer (504 on a timeout), or a refused WebSocket handshake (403).
"""

from __future__ import annotations

import asyncio
import logging

from bff.errors import BffError, InvalidPath, PayloadTooLarge, UpstreamError
from bff.proxy import REQUEST_DROP, read_request_headers, response_headers, send_error
from bff.types import Receive, Scope, Send
from bff.upstream import UpstreamClient, UpstreamResponse
from bff.upstream.websocket import UpstreamWebSocket, WebSocketClient, first_of, sendable_close_code

logger = logging.getLogger(__name__)

#: The WebSocket handshake's own fields: the client makes a fresh handshake with the dev server.
_WEBSOCKET_DROP = REQUEST_DROP | {
    b"sec-websocket-key",
    b"sec-websocket-version",
    b"sec-websocket-extensions",
    b"sec-websocket-protocol",
    b"sec-websocket-accept",
}


def _target(scope: Scope) -> str:
    """The raw path and query as sent by the browser (ASCII only: anything else cannot go on a request line)."""
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
    query: bytes = scope.get("query_string", b"")
    try:
        target = raw_path.decode("ascii") + ("?" + query.decode("ascii") if query else "")
    except UnicodeDecodeError as exc:
        raise InvalidPath("the request target is not ASCII") from exc
    if not target.startswith("/") or any(c <= " " or c == "\x7f" for c in target):
        raise InvalidPath("the request target is malformed")
    return target


class DevServerFrontend:
    """Raw ASGI relay to a frontend dev server (see the module docstring)."""

    def __init__(
        self,
        base_url: str,
        client: UpstreamClient,
        websockets: WebSocketClient,
        *,
        max_body: int = 10 * 1024 * 1024,
        timeout: float = 3600.0,
    ) -> None:
        self._base = base_url.rstrip("/")
        scheme, sep, rest = self._base.partition("://")
        self._ws_base = ("wss" if scheme == "https" else "ws") + sep + rest
        self._client = client
        self._websockets = websockets
        self._max_body = max_body
        # Generous: a dev server's event stream (webpack's /__webpack_hmr) may be quiet for a long while.
        self._options = client.options(connect_timeout=5.0, timeout=timeout)

    async def aclose(self) -> None:
        """Ends the WebSocket client (the HTTP client is the app's and is closed by the app)."""
        await self._websockets.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self._http(scope, receive, send)

    # --- HTTP ------------------------------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            url = self._base + _target(scope)
            incoming = read_request_headers(scope["headers"], REQUEST_DROP)
            body = await self._read_body(receive) if incoming.content_length or incoming.chunked else None
            response = await self._client.send(scope["method"], url, incoming.forward, body, self._options)
        except BffError as exc:
            if isinstance(exc, UpstreamError):
                logger.warning("frontend dev server %s: %s", self._base, exc.message)
            await send_error(send, exc)
            return
        except _ClientGone:
            return
        try:
            # The browser leaving must end a stream that would never end by itself (an event stream).
            await first_of(self._relay(send, response), _disconnected(receive))
        finally:
            response.close()  # a no-op after release()

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                raise PayloadTooLarge(f"the request body exceeds {self._max_body} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _relay(self, send: Send, response: UpstreamResponse) -> None:
        await send(
            {"type": "http.response.start", "status": response.status, "headers": response_headers(response.headers)}
        )
        try:
            while True:
                chunk = await response.read_chunk()
                if response.at_eof():
                    await send({"type": "http.response.body", "body": chunk, "more_body": False})
                    response.release()
                    return
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except UpstreamError as exc:  # the status line is gone: leave the body unfinished
            logger.warning("frontend dev server %s: %s", self._base, exc.message)
        except OSError:
            pass  # the browser is gone

    # --- WebSocket -------------------------------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        try:
            url = self._ws_base + _target(scope)
            headers = read_request_headers(scope["headers"], _WEBSOCKET_DROP).forward
            upstream = await self._websockets.connect(url, headers, scope.get("subprotocols") or [])
        except BffError as exc:
            logger.warning("frontend dev server %s: WebSocket refused (%s)", self._base, exc.message)
            await send({"type": "websocket.close", "code": 1011})
            return
        try:
            await send({"type": "websocket.accept", "subprotocol": upstream.protocol})
            await first_of(_browser_to_upstream(receive, upstream), _upstream_to_browser(upstream, send))
        finally:
            await upstream.close()


class _ClientGone(Exception):
    """The browser disconnected while its request body was being read."""


async def _disconnected(receive: Receive) -> None:
    """Returns once the browser has gone. The body has been read, so at most its (empty) last message comes first;
    never loop on ``receive()``: a server that kept answering at once would starve the event loop."""
    for _ in range(2):
        if (await receive())["type"] == "http.disconnect":
            return
    await asyncio.Event().wait()  # no disconnect will be reported: wait to be cancelled


async def _browser_to_upstream(receive: Receive, upstream: UpstreamWebSocket) -> None:
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.receive":
                if message.get("text") is not None:
                    await upstream.send_text(message["text"])
                else:
                    await upstream.send_bytes(message.get("bytes") or b"")
            elif message["type"] == "websocket.disconnect":
                await upstream.close(sendable_close_code(message.get("code")))
                return
    except UpstreamError:
        return  # the dev server went away: the other direction reports the close


async def _upstream_to_browser(upstream: UpstreamWebSocket, send: Send) -> None:
    try:
        while True:
            frame = await upstream.receive()
            if frame.kind == "text":
                await send({"type": "websocket.send", "text": frame.data})
            elif frame.kind == "bytes":
                await send({"type": "websocket.send", "bytes": frame.data})
            else:
                await send({"type": "websocket.close", "code": frame.code})
                return
    except OSError:
        return  # the browser is gone (the ASGI server's ClientDisconnected is an OSError)
