"""A real WebSocket upstream refusing the handshake with a step-up challenge (RFC 9470 3): the browser's handshake
gets the HTTP routes' 401 ``step_up_required`` with its ``login_url`` (under the frontend's path prefix), not a 502;
a plain 401, or a challenge for ``acr_values`` outside ``acr_values_allowed``, stays a 502."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from bff.config import RouteSettings
from bff.proxy.websocket import DENIAL_EXTENSION, WebSocketProxy
from bff.types import PATH_PREFIX, Message, Scope
from bff.upstream import UpstreamClient
from tests.support.asgi import websocket_handshake
from tests.support.configs import base_document, make_config
from tests.support.ws_upstream import WebSocketUpstream, running_ws_upstream

ORIGIN = "https://app.example.com"


class TokenSessions:
    """A session with ``token`` (None: the handshake goes without ``Authorization``, the upstream answers a plain
    401)."""

    def __init__(self, token: str | None, acr_values_allowed: tuple[str, ...]) -> None:
        self.token = token
        self.acr_values_allowed = acr_values_allowed

    async def open_socket(self, scope: Scope, route: RouteSettings) -> tuple[str | None, str | None]:
        return self.token, None

    async def socket_session_alive(self, session_id: str, route: RouteSettings) -> bool:
        return True


@pytest.fixture(scope="module")
def ws_upstream() -> Iterator[WebSocketUpstream]:
    with running_ws_upstream() as running:
        yield running


async def _handshake(
    upstream: WebSocketUpstream,
    path: str,
    prefix: str = "",
    allowed: tuple[str, ...] = (),
    token: str | None = "access-token",
) -> list[Message]:
    doc = base_document(public_origin=ORIGIN)
    doc["routes"] = [{"path": "/live", "upstream": upstream.url, "websocket": True}]
    config = make_config(doc)
    proxy = WebSocketProxy(
        config.routes,
        UpstreamClient(),
        TokenSessions(token, allowed),
        public_origin=ORIGIN,
        trusted_proxies=(),
    )
    scope: Scope = {
        "type": "websocket",
        "path": "/live" + path,
        "raw_path": ("/live" + path).encode(),
        "query_string": b"",
        "headers": [(b"origin", ORIGIN.encode()), (b"sec-fetch-site", b"same-origin")],
        "client": ("127.0.0.1", 50000),
        "extensions": {DENIAL_EXTENSION: {}},
    }
    if prefix:
        scope[PATH_PREFIX] = prefix
    return await websocket_handshake(proxy, scope)


def _answer(sent: list[Message]) -> tuple[int, dict[str, object]]:
    assert [m["type"] for m in sent] == ["websocket.http.response.start", "websocket.http.response.body"]
    return sent[0]["status"], json.loads(sent[1]["body"])


@pytest.mark.parametrize(("prefix", "login"), [("", "/bff/login"), ("/console", "/console/bff/login")])
async def test_a_step_up_challenge_on_the_handshake_is_step_up_required(
    ws_upstream: WebSocketUpstream, prefix: str, login: str
) -> None:
    status, body = _answer(await _handshake(ws_upstream, "/step-up/feed", prefix))
    assert status == 401
    assert body["error"] == "step_up_required"
    assert body["acr_values"] == "mfa"
    assert body["max_age"] == 60
    assert str(body["login_url"]).startswith(login + "?")
    assert ws_upstream.handshakes[-1].path == "/step-up/feed"  # the upstream refused it, not bff


async def test_acr_values_outside_the_allowed_ones_stay_a_502(ws_upstream: WebSocketUpstream) -> None:
    status, body = _answer(await _handshake(ws_upstream, "/step-up/feed", allowed=("urn:acr:strong",)))
    assert (status, body["error"]) == (502, "bad_gateway")


async def test_a_401_without_a_step_up_challenge_stays_a_502(ws_upstream: WebSocketUpstream) -> None:
    status, body = _answer(await _handshake(ws_upstream, "/step-up/feed", token=None))
    assert (status, body["error"]) == (502, "bad_gateway")
