"""What the suite's ASGI fakes and middleware share: reading a request body whole, and handing it on to the app
behind once it has been read; the messages an app sends for one WebSocket handshake."""

from __future__ import annotations

from bff.types import ASGIApp, Message, Receive, Scope, Send


async def read_body(receive: Receive) -> bytes:
    """The request body: the ``body`` of every ``http.request`` message up to the one without ``more_body``."""
    body: bytes = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


def replaying(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` for the app behind a middleware that has already read ``body``: first the whole body in one
    message, then whatever ``receive`` gives (a disconnect)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def ok_answer(scope: Scope, receive: Receive, send: Send) -> None:
    """An upstream that answers every request ``200 ok`` (text/plain) and echoes nothing."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def websocket_handshake(app: ASGIApp, scope: Scope) -> list[Message]:
    """What ``app`` sends for one WebSocket handshake (``websocket.connect``) on ``scope``."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent
