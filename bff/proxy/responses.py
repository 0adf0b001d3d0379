"""Raw-ASGI error answers, shared by the proxy, the endpoints, the frontends and the edge protocol (no framework).

Every error the SPA can receive is JSON ``{"error": "<code>", "message": "..."}`` with a stable code
(``bff.errors``); the message is operator-facing and never contains a secret.
"""

from __future__ import annotations

import json

from bff.errors import BffError
from bff.types import Send

NO_STORE = (b"cache-control", b"no-store")


def error_payload(exc: BffError) -> dict[str, str | int]:
    return {"error": exc.error, "message": exc.message, **exc.details()}


def error_headers(exc: BffError) -> list[tuple[bytes, bytes]]:
    headers = [NO_STORE]
    if exc.retry_after is not None:
        headers.append((b"retry-after", str(exc.retry_after).encode("ascii")))
    return headers


async def send_json(send: Send, status: int, payload: object, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("ascii")),
        *(headers or [NO_STORE]),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, exc: BffError, extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send_json(send, exc.status, error_payload(exc), error_headers(exc) + (extra_headers or []))
