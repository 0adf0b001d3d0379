"""The WebSocket client (``websockets``) that relays the browser's WebSockets to the frontend dev server (hot reload).

Only ``bff.frontend.dev_server`` uses it (a handful of WebSockets per developer, never the data plane); the library
stays behind two small types, and its failures are translated where they enter (``raise ... from exc``, fixed
messages that carry no URL):

- connect refused, handshake refused (not a 101, redirects included), a broken frame stream -> ``UpstreamError`` (502)
- the connect or handshake timed out                                                      -> ``UpstreamTimeout`` (504)

It is a relay: no cookies are kept, no compression is negotiated (frames cross unchanged), no ``User-Agent`` is
added, no redirect is followed, no proxy is taken from the environment, and no keepalive pings are sent of its own
(pings from the dev server are answered). The caller decides which request headers go along
(``bff.frontend.dev_server`` never sends the browser's cookies or ``Authorization``); the ``Host``, ``Upgrade``,
``Connection`` and ``Sec-WebSocket-*`` fields of the handshake are the library's own (RFC 6455 4.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.typing import Subprotocol

from bff.errors import UpstreamError, UpstreamTimeout

FrameKind = Literal["text", "bytes", "close"]

#: Close codes that may not be sent in a Close frame (RFC 6455 7.4.1: 1005, 1006 and 1015 are reserved for
#: reporting; 1004 is reserved) or lie outside the ranges an endpoint may use (RFC 6455 7.4.2).
_UNSENDABLE = frozenset({1004, 1005, 1006, 1015})


def sendable_close_code(code: int | None, default: int = 1000) -> int:
    """``code`` if it may travel in a Close frame, else ``default`` (RFC 6455 7.4)."""
    if code is None or code in _UNSENDABLE or not (1000 <= code <= 1014 or 3000 <= code <= 4999):
        return default
    return code


@dataclass(frozen=True, slots=True)
class Frame:
    """One message from the other end: text, bytes, or the end of the conversation (with its close code)."""

    kind: FrameKind
    data: str | bytes = b""
    code: int = 1000


class _Connect(connect):
    """``connect`` without following redirects: the relay talks to the configured dev server only."""

    def process_redirect(self, exc: Exception) -> Exception | str:
        return exc


class UpstreamWebSocket:
    """An open WebSocket to the upstream. Its owner must ``await close()`` (try/finally)."""

    __slots__ = ("_ws", "protocol")

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        #: The subprotocol the upstream chose (``Sec-WebSocket-Protocol``), or None.
        self.protocol: str | None = ws.subprotocol

    async def receive(self) -> Frame:
        """The next message; a ``close`` frame once the upstream closed or the connection broke."""
        try:
            message = await self._ws.recv()
        except ConnectionClosed as exc:
            # The library has answered the close handshake, or the link broke (no Close frame received).
            code = exc.rcvd.code if exc.rcvd is not None else None
            return Frame("close", code=sendable_close_code(code, default=1000 if code is not None else 1011))
        if isinstance(message, str):
            return Frame("text", message)
        return Frame("bytes", message)

    async def send_text(self, data: str) -> None:
        try:
            await self._ws.send(data)
        except (ConnectionClosed, ConnectionError) as exc:
            raise UpstreamError("the upstream WebSocket is closed") from exc

    async def send_bytes(self, data: bytes) -> None:
        try:
            await self._ws.send(data)
        except (ConnectionClosed, ConnectionError) as exc:
            raise UpstreamError("the upstream WebSocket is closed") from exc

    async def close(self, code: int = 1000) -> None:
        """Close the upstream side (a no-op when it is closed already)."""
        await self._ws.close(code=sendable_close_code(code))


class WebSocketClient:
    """Opens WebSockets to one kind of upstream. Create once; ``await aclose()`` at shutdown."""

    def __init__(self, *, connect_timeout: float = 5.0, max_message_size: int = 16 * 1024 * 1024) -> None:
        self._connect_timeout = connect_timeout
        self._max_message_size = max_message_size

    async def connect(
        self, url: str, headers: Sequence[tuple[str, str]], protocols: Sequence[str]
    ) -> UpstreamWebSocket:
        """Open ``url`` (``ws://`` or ``wss://``, already percent-encoded ASCII: sent byte for byte), offering
        ``protocols``; return once the upstream accepted the handshake."""
        try:
            ws = await _Connect(
                url,
                additional_headers=list(headers),
                subprotocols=[Subprotocol(p) for p in protocols] or None,
                compression=None,
                user_agent_header=None,
                proxy=None,
                open_timeout=self._connect_timeout,
                ping_interval=None,
                max_size=self._max_message_size,
            )
        except InvalidStatus as exc:
            raise UpstreamError(
                f"the upstream refused the WebSocket handshake (HTTP {exc.response.status_code})"
            ) from exc
        except TimeoutError as exc:
            raise UpstreamTimeout("the upstream did not answer the WebSocket handshake in time") from exc
        except (WebSocketException, OSError) as exc:
            raise UpstreamError("the upstream could not be reached") from exc
        return UpstreamWebSocket(ws)

    async def aclose(self) -> None:
        """Nothing to end: each WebSocket is its owner's to close (no shared session)."""
