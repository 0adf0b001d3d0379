"""A stand-in for a frontend dev server (Vite and the like): raw ASGI, so it sees the request exactly as bff sent it.

HTTP (anything but the paths below) answers JSON describing what arrived (method, raw path, query, header lines,
body) with a ``Set-Cookie`` that must not reach the browser and an ``X-Dev`` header that must. ``/events`` is an
endless event stream (``state.events_closed`` is set when the connection goes away).

WebSocket: accepts with the first subprotocol offered, sends one JSON message describing the handshake it received
(path, query, header lines, subprotocols), then echoes: text ``t`` comes back as ``echo:t``, bytes come back
unchanged, and the text ``close:CODE`` makes it close with that code. The close code it receives from the other
side is appended to ``state.ws_close_codes`` (and ``state.ws_closed`` is set).
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field

from bff.types import Receive, Scope, Send
from tests.support.asgi import read_body


@dataclass
class DevServerState:
    requests: int = 0
    ws_close_codes: list[int] = field(default_factory=list)
    ws_closed: threading.Event = field(default_factory=threading.Event)
    events_closed: threading.Event = field(default_factory=threading.Event)

    def reset(self) -> None:
        self.requests = 0
        self.ws_close_codes.clear()
        self.ws_closed.clear()
        self.events_closed.clear()


def _describe(scope: Scope) -> dict[str, object]:
    return {
        "path": (scope.get("raw_path") or scope["path"].encode()).decode("latin-1"),
        "query": scope.get("query_string", b"").decode("latin-1"),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
    }


class DevServer:
    """Serve with ``lifespan="off"``."""

    def __init__(self, state: DevServerState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            self.state.requests += 1
            if scope["path"] == "/events":
                await self._events(receive, send)
            else:
                await self._echo(scope, receive, send)

    async def _echo(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(receive)
        payload = json.dumps({**_describe(scope), "method": scope["method"], "body": body.decode("latin-1")}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"set-cookie", b"dev=1; Path=/"),
            (b"x-dev", b"yes"),
            (b"content-length", str(len(payload)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _events(self, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})

        async def stream() -> None:
            i = 0
            while True:
                await send({"type": "http.response.body", "body": f"data: {i}\n\n".encode(), "more_body": True})
                i += 1
                await asyncio.sleep(0.05)

        streaming = asyncio.ensure_future(stream())
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        finally:
            streaming.cancel()
            self.state.events_closed.set()

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "websocket.connect"
        offered: list[str] = scope.get("subprotocols") or []
        await send({"type": "websocket.accept", "subprotocol": offered[0] if offered else None})
        await send({"type": "websocket.send", "text": json.dumps({**_describe(scope), "subprotocols": offered})})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.state.ws_close_codes.append(message.get("code", 1005))
                self.state.ws_closed.set()
                return
            text = message.get("text")
            if text is not None and text.startswith("close:"):
                await send({"type": "websocket.close", "code": int(text.removeprefix("close:"))})
                self.state.ws_closed.set()
                return
            if text is not None:
                await send({"type": "websocket.send", "text": "echo:" + text})
            else:
                await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
