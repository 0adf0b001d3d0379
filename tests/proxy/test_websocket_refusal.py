"""The refusal of a WebSocket handshake under an ASGI server without the "WebSocket Denial Response" extension: a
close with 1008 before the accept (the browser sees a failed handshake), and still nothing asked of the session
seam or the upstream."""

from __future__ import annotations

from typing import Any

import pytest

from bff.config import RouteSettings
from bff.proxy.websocket import WebSocketProxy
from bff.types import Message, Scope
from bff.upstream import UpstreamClient
from tests.support.asgi import websocket_handshake
from tests.support.configs import base_document, make_config

ORIGIN = "https://app.example.com"


class NoSessions:
    """A session seam that must not be reached: every refusal here happens before it."""

    acr_values_allowed = ()

    async def open_socket(self, scope: Scope, route: RouteSettings) -> tuple[str | None, str | None]:
        raise AssertionError("the session seam was asked")

    async def socket_session_alive(self, session_id: str, route: RouteSettings) -> bool:
        raise AssertionError("the session seam was asked")


def _scope(headers: list[tuple[bytes, bytes]], extensions: dict[str, Any] | None) -> Scope:
    scope: Scope = {
        "type": "websocket",
        "path": "/api/live/x",
        "raw_path": b"/api/live/x",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
    }
    if extensions is not None:
        scope["extensions"] = extensions
    return scope


async def _call(scope: Scope) -> list[Message]:
    doc = base_document(public_origin=ORIGIN)
    doc["routes"] = [{"path": "/api/live", "upstream": "https://live.example.net", "websocket": True}]
    config = make_config(doc)
    proxy = WebSocketProxy(config.routes, UpstreamClient(), NoSessions(), public_origin=ORIGIN, trusted_proxies=())
    return await websocket_handshake(proxy, scope)


@pytest.mark.parametrize(
    "headers",
    [[], [(b"origin", b"https://evil.example")], [(b"origin", ORIGIN.encode()), (b"sec-fetch-site", b"cross-site")]],
)
async def test_without_the_denial_extension_a_refusal_is_a_close_with_1008(headers: list[tuple[bytes, bytes]]) -> None:
    assert await _call(_scope(headers, None)) == [{"type": "websocket.close", "code": 1008}]


async def test_with_the_denial_extension_the_refusal_is_a_401_json_answer() -> None:
    sent = await _call(_scope([], {"websocket.http.response": {}}))
    assert [m["type"] for m in sent] == ["websocket.http.response.start", "websocket.http.response.body"]
    assert sent[0]["status"] == 401
    assert (b"content-type", b"application/json") in sent[0]["headers"]
    assert b'"error":"csrf"' in sent[1]["body"]
