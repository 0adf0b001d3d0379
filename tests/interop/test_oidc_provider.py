"""bff against panva's oidc-provider, an OpenID Certified provider written by others (npm, pinned in
``tests/interop/oidc_provider``), all real servers on loopback: bff (sessions in the suite's Redis), the provider and
an API that accepts only the provider's RFC 9068 access tokens, verified with its JWKS alone.

Login (the provider's login form and consent page, scripted over HTTP), a proxied call, refresh (proactive after
expiry, a storm of parallel requests costing the provider one rotation; reactive after an upstream 401), the
provider's refresh-token reuse detection, RP-initiated logout (revocation and end-session reach the provider) and
back-channel logout (the provider's logout token ends bff's session).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bff.app import BffApp
from tests.support.browser import Browser
from tests.support.node_oidc_provider import NodeOP, Registration
from tests.support.servers import serve
from tests.support.sessions import expire_in_store
from tests.support.stack import serving_bff

XHR = {"X-CSRF": "1"}
INVALID_TOKEN = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class JwtApi:
    """An API that accepts a bearer token only if it is the provider's RFC 9068 access token for this API (JWKS
    alone: signature, ``typ``, ``iss``, ``aud``, ``exp``), and not one it was told to reject; answers the claims."""

    def __init__(self, op: NodeOP) -> None:
        self.op = op
        self.rejected: set[str] = set()  #: ``jti``s refused as if revoked
        self.seen: list[str] = []  #: the ``jti`` of every request
        self.app = Starlette(routes=[Route("/{path:path}", self.handle, methods=["GET", "POST"])])

    async def handle(self, request: Request) -> Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        async with httpx.AsyncClient() as http:
            keys = KeySet.import_key_set((await http.get(self.op.metadata["jwks_uri"])).json())
        try:
            decoded = jwt.decode(token, keys, algorithms=["ES256", "RS256"])
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": self.op.issuer},
                aud={"essential": True, "value": "interop-api"},
                exp={"essential": True},
                jti={"essential": True},
            ).validate(decoded.claims)
        except (JoseError, ValueError):
            return Response(status_code=401, headers=INVALID_TOKEN)
        self.seen.append(decoded.claims["jti"])
        if decoded.header.get("typ") != "at+jwt" or decoded.claims["jti"] in self.rejected:
            return Response(status_code=401, headers=INVALID_TOKEN)
        return JSONResponse(decoded.claims)


@dataclass
class Bff:
    app: BffApp
    url: str
    client: Registration

    def cookie(self, browser: Browser) -> str:
        return browser.cookies(self.url)["__Host-bff"]


@pytest.fixture
def api(node_op: NodeOP) -> Iterator[tuple[JwtApi, str]]:
    upstream = JwtApi(node_op)
    with serve(upstream.app) as url:
        yield upstream, url


@pytest.fixture
def bff(node_op: NodeOP, api: tuple[JwtApi, str], redis_url: str) -> Iterator[Bff]:
    registered: list[Registration] = []

    def configure(doc: dict[str, Any]) -> None:
        registered.append(node_op.register(doc["server"]["public_origin"]))
        doc["oidc"].update(
            client_id=registered[0].client_id,
            client_secret=registered[0].client_secret,
            scopes=["openid", "profile", "email", "offline_access", "api:read"],
            # OpenID Connect Core 11: offline access (a refresh token) needs prompt=consent.
            extra_auth_params={"prompt": "consent"},
        )
        doc["routes"] = [{"path": "/api", "upstream": api[1], "token": "user"}]

    with serving_bff(node_op.issuer, redis_url=redis_url, customize=configure) as (app, url):
        yield Bff(app, url, registered[0])


async def signed_in(op: NodeOP, bff: Bff, browser: Browser) -> dict[str, Any]:
    """Sign in through the provider's pages; returns ``/bff/user``."""
    hops = await op.sign_in(browser, bff.url)
    assert hops[-1].status_code != 500, hops[-1].text
    assert any('value="login"' in hop.text for hop in hops), "the provider showed its login form"
    user = await browser.request("GET", f"{bff.url}/bff/user", headers=XHR)
    assert user.status_code == 200, [(h.status_code, str(h.url), h.text[:300]) for h in hops]
    body: dict[str, Any] = user.json()
    return body


async def test_login_and_a_proxied_call_with_the_providers_access_token(
    node_op: NodeOP, bff: Bff, browser: Browser, api: tuple[JwtApi, str]
) -> None:
    user = await signed_in(node_op, bff, browser)
    assert (user["sub"], user["name"], user["email"]) == ("alice", "alice Example", "alice@example.com")

    response = await browser.request("GET", f"{bff.url}/api/me", headers=XHR)
    assert response.status_code == 200, response.text
    claims = response.json()
    assert (claims["sub"], claims["client_id"], claims["aud"]) == ("alice", bff.client.client_id, "interop-api")
    assert node_op.refreshes(bff.client.client_id) == 0


async def test_a_storm_on_an_expired_token_costs_the_provider_one_rotation(
    node_op: NodeOP, bff: Bff, browser: Browser, api: tuple[JwtApi, str], redis_url: str
) -> None:
    await signed_in(node_op, bff, browser)
    first = (await browser.request("GET", f"{bff.url}/api/me", headers=XHR)).json()["jti"]
    spent = (await expire_in_store(bff.app, redis_url, bff.cookie(browser))).session.tokens.refresh_token
    assert spent is not None

    responses = await asyncio.gather(*(browser.request("GET", f"{bff.url}/api/me", headers=XHR) for _ in range(20)))

    assert [r.status_code for r in responses] == [200] * 20
    tokens = {r.json()["jti"] for r in responses}
    assert len(tokens) == 1
    assert first not in tokens
    assert node_op.refreshes(bff.client.client_id) == 1
    events = {e["event"] for e in node_op.events(bff.client.client_id)}
    assert "grant.revoked" not in events
    assert "grant.error" not in events
    assert node_op.introspect(bff.client, spent)["active"] is False  # the provider rotated it


async def test_an_upstream_401_refreshes_once_and_replays(
    node_op: NodeOP, bff: Bff, browser: Browser, api: tuple[JwtApi, str]
) -> None:
    await signed_in(node_op, bff, browser)
    first = (await browser.request("GET", f"{bff.url}/api/me", headers=XHR)).json()["jti"]
    api[0].rejected.add(first)

    response = await browser.request("POST", f"{bff.url}/api/me", headers=XHR, content=b"{}")

    assert response.status_code == 200, response.text
    assert response.json()["jti"] != first
    assert api[0].seen[-2:] == [first, response.json()["jti"]]
    assert node_op.refreshes(bff.client.client_id) == 1


async def test_a_replayed_refresh_token_revokes_the_grant_and_ends_the_session(
    node_op: NodeOP, bff: Bff, browser: Browser, api: tuple[JwtApi, str], redis_url: str
) -> None:
    await signed_in(node_op, bff, browser)
    stolen = (await expire_in_store(bff.app, redis_url, bff.cookie(browser))).session.tokens.refresh_token
    assert stolen is not None
    assert (await browser.request("GET", f"{bff.url}/api/me", headers=XHR)).status_code == 200  # rotated

    async with httpx.AsyncClient() as http:  # a thief presents the spent token: reuse detection
        replay = await http.post(
            node_op.metadata["token_endpoint"],
            data={"grant_type": "refresh_token", "refresh_token": stolen},
            auth=(bff.client.client_id, bff.client.client_secret),
        )
    assert (replay.status_code, replay.json()["error"]) == (400, "invalid_grant")

    await expire_in_store(bff.app, redis_url, bff.cookie(browser))
    response = await browser.request("GET", f"{bff.url}/api/me", headers=XHR)
    assert response.status_code == 401
    assert response.json()["error"] == "session_expired"
    assert (await browser.request("GET", f"{bff.url}/bff/user", headers=XHR)).status_code == 401


async def test_rp_initiated_logout_revokes_and_ends_the_providers_session(
    node_op: NodeOP, bff: Bff, browser: Browser, redis_url: str
) -> None:
    user = await signed_in(node_op, bff, browser)
    refresh_token = (await expire_in_store(bff.app, redis_url, bff.cookie(browser))).session.tokens.refresh_token
    assert refresh_token is not None
    assert node_op.introspect(bff.client, refresh_token)["active"] is True

    hops = await browser.follow(bff.url + user["logout_url"])
    end_session = hops[-1]
    assert str(end_session.url).startswith(node_op.metadata["end_session_endpoint"])
    assert "id_token_hint=" in str(end_session.url)
    assert node_op.introspect(bff.client, refresh_token)["active"] is False  # RFC 7009 revocation reached it

    hops = await node_op.submit_form(browser, end_session, logout="yes")  # the provider asks to confirm
    assert str(hops[-1].url) == f"{bff.url}/"  # the registered post_logout_redirect_uri
    assert "end_session.success" in {e["event"] for e in node_op.events(bff.client.client_id)}
    assert (await browser.request("GET", f"{bff.url}/bff/user", headers=XHR)).status_code == 401
    again = await node_op.sign_in(browser, bff.url)
    assert any('value="login"' in hop.text for hop in again), "the provider's session is gone: its form again"


async def test_back_channel_logout_from_the_provider_ends_the_session(
    node_op: NodeOP, bff: Bff, browser: Browser
) -> None:
    await signed_in(node_op, bff, browser)

    # The person logs out at the provider itself (another application's logout, say): no bff involved.
    confirm = await browser.request("GET", node_op.metadata["end_session_endpoint"])
    assert confirm.status_code == 200, confirm.text
    await node_op.submit_form(browser, confirm, logout="yes")

    events = [e for e in node_op.events(bff.client.client_id) if e["event"].startswith("backchannel.")]
    assert [e["event"] for e in events] == ["backchannel.success"], [e.get("error") for e in events]
    assert (await browser.request("GET", f"{bff.url}/bff/user", headers=XHR)).status_code == 401
    assert (await browser.request("GET", f"{bff.url}/api/me", headers=XHR)).status_code == 401
