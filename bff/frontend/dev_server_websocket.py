"""A WebSocket client (aiohttp) for relaying the browser's WebSockets to the frontend dev server (hot reload).

Infrastructure layer, beside ``bff.upstream_client``: aiohttp (a handful of WebSockets per developer, never the
data plane) stays behind two small types, and its failures are translated where they enter (``raise ... from exc``,
fixed messages that carry no URL):

- connect refused, handshake refused (not a 101), a broken frame stream -> ``UpstreamError``   (502 bad_gateway)
- the connect or handshake timed out                                   -> ``UpstreamTimeout`` (504)

The session keeps no cookies (``DummyCookieJar``) and negotiates no compression: it is a relay, frames cross it
unchanged. The caller decides which request headers go along (``bff.frontend.dev_server`` never sends the
browser's cookies or ``Authorization``); the ``Upgrade``, ``Connection`` and ``Sec-WebSocket-*`` fields of the
handshake are aiohttp's own. The session is created on first use, inside the running loop; ``aclose()`` ends it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import aiohttp
from yarl import URL

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


class UpstreamWebSocket:
    """An open WebSocket to the upstream. Its owner must ``await close()`` (try/finally)."""

    __slots__ = ("_ws", "protocol")

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        #: The subprotocol the upstream chose (``Sec-WebSocket-Protocol``), or None.
        self.protocol: str | None = ws.protocol

    async def receive(self) -> Frame:
        """The next message; a ``close`` frame once the upstream closed or the connection broke."""
        message = await self._ws.receive()
        if message.type is aiohttp.WSMsgType.TEXT:
            return Frame("text", message.data)
        if message.type is aiohttp.WSMsgType.BINARY:
            return Frame("bytes", message.data)
        # CLOSE, CLOSING, CLOSED or ERROR: aiohttp has answered the close handshake (autoclose) or the link broke.
        code = self._ws.close_code
        return Frame("close", code=sendable_close_code(code, default=1000 if code is not None else 1011))

    async def send_text(self, data: str) -> None:
        try:
            await self._ws.send_str(data)
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise UpstreamError("the upstream WebSocket is closed") from exc

    async def send_bytes(self, data: bytes) -> None:
        try:
            await self._ws.send_bytes(data)
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise UpstreamError("the upstream WebSocket is closed") from exc

    async def close(self, code: int = 1000) -> None:
        """Close the upstream side (a no-op when it is closed already)."""
        await self._ws.close(code=sendable_close_code(code))


class WebSocketClient:
    """Opens WebSockets to one kind of upstream. Create once; ``await aclose()`` at shutdown."""

    def __init__(self, *, connect_timeout: float = 5.0, max_message_size: int = 16 * 1024 * 1024) -> None:
        self._connect_timeout = connect_timeout
        self._max_message_size = max_message_size
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent",),
                timeout=aiohttp.ClientTimeout(total=None, connect=self._connect_timeout),
            )
        return self._session

    async def connect(
        self, url: str, headers: Sequence[tuple[str, str]], protocols: Sequence[str]
    ) -> UpstreamWebSocket:
        """Open ``url`` (``ws://`` or ``wss://``, already percent-encoded: sent byte for byte), offering
        ``protocols``; return once the upstream accepted the handshake."""
        try:
            ws = await self._get_session().ws_connect(
                URL(url, encoded=True),
                protocols=tuple(protocols),
                headers=list(headers),
                compress=0,
                max_msg_size=self._max_message_size,
                autoclose=True,
                autoping=True,
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise UpstreamError(f"the upstream refused the WebSocket handshake (HTTP {exc.status})") from exc
        except aiohttp.ConnectionTimeoutError as exc:
            raise UpstreamTimeout("connecting to the upstream timed out") from exc
        except TimeoutError as exc:
            raise UpstreamTimeout("the upstream did not answer the WebSocket handshake in time") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamError("the upstream could not be reached") from exc
        return UpstreamWebSocket(ws)

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
            await asyncio.sleep(0)
