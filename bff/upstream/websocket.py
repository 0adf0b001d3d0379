"""The WebSocket client (``websockets``) that relays the browser's WebSockets to an upstream: a ``websocket = true``
route (``bff.proxy.websocket``) or the frontend dev server (hot reload, ``bff.frontend.dev_server``).

The library stays behind two small types, and its failures are translated where they enter (``raise ... from exc``,
fixed messages that carry no URL):

- connect refused, handshake refused (not a 101, redirects included), a broken frame stream -> ``UpstreamError`` (502)
  (a refused handshake is a ``HandshakeRefused`` carrying the status and header fields, for the caller to read a
  ``WWW-Authenticate`` challenge)
- the connect or handshake timed out                                                      -> ``UpstreamTimeout`` (504)

It is a relay: no cookies are kept, no compression is negotiated (frames cross unchanged), no ``User-Agent`` is
added, no redirect is followed, no proxy is taken from the environment, and no keepalive pings are sent of its own
(pings from the upstream are answered). Reading is bounded: at most ``max_queue`` received messages of at most
``max_size`` bytes wait in the library before it stops reading the socket (TCP backpressure to the upstream).

The caller decides which request headers go along (never the browser's cookies; ``Authorization`` only as the
route's bearer token); the ``Host``, ``Upgrade``, ``Connection`` and ``Sec-WebSocket-*`` fields of the handshake are
the library's own (RFC 6455 4.1).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.typing import Subprotocol

from bff.errors import UpstreamError, UpstreamTimeout

FrameKind = Literal["text", "bytes", "close"]

#: Close codes that may not be sent in a Close frame (RFC 6455 7.4.1: 1005, 1006 and 1015 are reserved for
#: reporting; 1004 is reserved) or lie outside the ranges an endpoint may use (RFC 6455 7.4.2).
_UNSENDABLE = frozenset({1004, 1005, 1006, 1015})


class HandshakeRefused(UpstreamError):
    """The upstream answered the handshake with an HTTP status other than 101: still a 502 unless the caller makes
    more of it (a step-up challenge, RFC 9470 3)."""

    def __init__(self, message: str, *, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        super().__init__(message)
        self.upstream_status = status  # not ``status``: bff's own answer stays a 502
        self.upstream_headers = headers


async def first_of(*work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` (a relay's directions) concurrently until one finishes; cancel the rest; re-raise a failure of
    any."""
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception):
            raise result


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


#: RFC 6455 7.4.1: the message was too big to process.
MESSAGE_TOO_BIG = 1009


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
            if exc.rcvd is None and exc.sent is not None and exc.sent.code == MESSAGE_TOO_BIG:
                return Frame("close", code=MESSAGE_TOO_BIG)  # the upstream's message exceeded max_size
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

    def __init__(
        self, *, connect_timeout: float = 5.0, max_message_size: int = 16 * 1024 * 1024, max_queue: int = 16
    ) -> None:
        self._connect_timeout = connect_timeout
        self._max_message_size = max_message_size
        self._max_queue = max_queue

    async def connect(
        self,
        url: str,
        headers: Sequence[tuple[str, str]],
        protocols: Sequence[str],
        *,
        connect_timeout: float | None = None,
        max_size: int | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> UpstreamWebSocket:
        """Open ``url`` (``ws://`` or ``wss://``, already percent-encoded ASCII: sent byte for byte), offering
        ``protocols``; return once the upstream accepted the handshake. ``tls``: the route's TLS context for a
        ``wss://`` upstream (its CA bundle, its client certificate); None: the system's CAs."""
        if url.startswith("wss://") and tls is None:
            tls = ssl.create_default_context()
        elif not url.startswith("wss://"):
            tls = None
        try:
            ws = await _Connect(
                url,
                additional_headers=list(headers),
                subprotocols=[Subprotocol(p) for p in protocols] or None,
                compression=None,
                user_agent_header=None,
                proxy=None,
                open_timeout=connect_timeout if connect_timeout is not None else self._connect_timeout,
                ping_interval=None,
                max_size=max_size if max_size is not None else self._max_message_size,
                max_queue=self._max_queue,
                ssl=tls,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise HandshakeRefused(
                f"the upstream refused the WebSocket handshake (HTTP {status})",
                status=status,
                headers=[
                    (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in exc.response.headers.raw_items()
                ],
            ) from exc
        except TimeoutError as exc:
            raise UpstreamTimeout("the upstream did not answer the WebSocket handshake in time") from exc
        except (WebSocketException, OSError) as exc:
            raise UpstreamError("the upstream could not be reached") from exc
        return UpstreamWebSocket(ws)

    async def aclose(self) -> None:
        """Nothing to end: each WebSocket is its owner's to close (no shared session)."""
