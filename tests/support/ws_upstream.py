"""A real WebSocket upstream on loopback (the ``websockets`` server in its own thread and event loop).

It refuses a handshake without ``Authorization: Bearer`` (401), a handshake to a path under ``/step-up`` with a 401
that asks for a step-up (RFC 9470 3: ``acr_values="mfa"``, ``max_age=60``), records every handshake it sees (never
the token: its ``fingerprint``), and answers each message: ``whoami`` -> the fingerprint of the handshake's token,
``big:N`` -> a message of N bytes, ``ticks:N`` -> N numbered messages, ``flood:N:SIZE`` -> N messages of SIZE bytes
as fast as the connection takes them (``flooded`` counts the sends that completed), anything else -> echoed unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.support.leak_guard import fingerprint

#: The challenge of a handshake under ``/step-up`` (RFC 9470 3).
STEP_UP_CHALLENGE = 'Bearer error="insufficient_user_authentication", acr_values="mfa", max_age=60'


@dataclass
class Handshake:
    path: str
    token_fingerprint: str
    headers: dict[str, str]


@dataclass
class WebSocketUpstream:
    url: str = ""
    handshakes: list[Handshake] = field(default_factory=list)
    #: ``(path, close code)`` the upstream received from bff, one per finished connection.
    closes: list[tuple[str, int | None]] = field(default_factory=list)
    #: Messages of the last ``flood`` that the connection accepted so far.
    flooded: int = 0


def _check(upstream: WebSocketUpstream, connection: ServerConnection, request: Request) -> Response | None:
    auth = request.headers.get("authorization", "")
    headers = {k.lower(): v for k, v in request.headers.raw_items() if k.lower() not in ("authorization", "cookie")}
    if "cookie" in {k.lower() for k in request.headers}:
        headers["cookie"] = "(present)"
    upstream.handshakes.append(Handshake(request.path, fingerprint(auth.removeprefix("Bearer ")), headers))
    if not auth.startswith("Bearer "):
        return connection.respond(HTTPStatus.UNAUTHORIZED, "bearer token required\n")
    if request.path.startswith("/step-up"):
        refusal = connection.respond(HTTPStatus.UNAUTHORIZED, "stronger login required\n")
        refusal.headers["WWW-Authenticate"] = STEP_UP_CHALLENGE
        return refusal
    return None


async def _answer(upstream: WebSocketUpstream, connection: ServerConnection) -> None:
    auth = connection.request.headers.get("authorization", "") if connection.request else ""
    with contextlib.suppress(ConnectionClosed):
        async for message in connection:
            if message == "whoami":
                await connection.send(fingerprint(auth.removeprefix("Bearer ")))
            elif isinstance(message, str) and message.startswith("big:"):
                await connection.send("x" * int(message[4:]))
            elif isinstance(message, str) and message.startswith("flood:"):
                count, size = (int(part) for part in message[6:].split(":"))
                upstream.flooded = 0
                for n in range(count):
                    await connection.send(f"{n:08d}".ljust(size, "f"))
                    upstream.flooded += 1
            elif isinstance(message, str) and message.startswith("ticks:"):
                for n in range(int(message[6:])):
                    await connection.send(f"tick {n}")
            else:
                await connection.send(message)
    upstream.closes.append((connection.request.path if connection.request else "", connection.close_code))


@contextlib.contextmanager
def running_ws_upstream() -> Iterator[WebSocketUpstream]:
    upstream = WebSocketUpstream()
    ready = threading.Event()
    stop: list[asyncio.Future[None]] = []
    loop = asyncio.new_event_loop()

    async def main() -> None:
        server: Server
        async with serve(
            lambda c: _answer(upstream, c),
            "127.0.0.1",
            0,
            process_request=lambda c, r: _check(upstream, c, r),
            max_size=2**24,
            compression=None,
        ) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            upstream.url = f"http://127.0.0.1:{port}"
            stop.append(loop.create_future())
            ready.set()
            await stop[0]

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield upstream
    finally:
        loop.call_soon_threadsafe(stop[0].set_result, None)
        thread.join(10)
        loop.close()
