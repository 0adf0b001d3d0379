"""The token lifecycle end to end: a browser, bff, the test OpenID Provider (rotating refresh tokens, revoking the
family on reuse) and an upstream, all real servers on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.browser import Browser
from tests.support.leak_guard import fingerprint
from tests.support.servers import serve
from tests.support.sessions import expire_in_store
from tests.support.stack import Stack, running_stack

XHR = {"X-CSRF": "1"}


class Upstream:
    """An API that accepts any bearer token except the ones it was told to reject (as if they were revoked)."""

    def __init__(self) -> None:
        self.rejected: set[str] = set()  #: fingerprints of the tokens it refuses
        self.reject_all = False
        self.seen: list[dict[str, Any]] = []
        self.app = Starlette(routes=[Route("/{path:path}", self.handle, methods=["GET", "POST"])])

    async def handle(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ")
        body = (await request.body()).decode()
        self.seen.append({"token": token, "cookie": request.headers.get("cookie"), "body": body})
        if self.reject_all or fingerprint(token) in self.rejected:
            return Response(status_code=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return JSONResponse({"token": fingerprint(token), "body": body})  # bff relays it: never the token itself


@pytest.fixture
def upstream() -> Iterator[tuple[Upstream, str]]:
    api = Upstream()
    with serve(api.app) as url:
        yield api, url


@pytest.fixture
def stack(upstream: tuple[Upstream, str], redis_url: str) -> Iterator[Stack]:
    def routes(doc: dict[str, Any]) -> None:
        doc["routes"] = [{"path": "/api", "upstream": upstream[1], "token": "user"}]

    with running_stack(redis_url=redis_url, customize=routes) as stack:
        yield stack


@pytest.fixture
async def browser(stack: Stack) -> AsyncIterator[Browser]:
    b = Browser()
    await b.follow(f"{stack.url}/bff/login")
    yield b
    await b.aclose()


async def test_the_access_token_reaches_the_upstream_and_the_cookie_does_not(
    stack: Stack, browser: Browser, upstream: tuple[Upstream, str]
) -> None:
    response = await browser.request("GET", f"{stack.url}/api/items", headers=XHR)
    assert response.status_code == 200
    assert response.json()["token"] == fingerprint(stack.provider.token_responses[0]["access_token"])
    assert upstream[0].seen[-1]["cookie"] is None


async def test_no_session_no_upstream_call(stack: Stack, upstream: tuple[Upstream, str]) -> None:
    anonymous = Browser()
    try:
        response = await anonymous.request("GET", f"{stack.url}/api/items", headers=XHR)
    finally:
        await anonymous.aclose()
    assert response.status_code == 401
    assert response.json()["error"] == "unauthenticated"
    assert upstream[0].seen == []


async def test_reactive_refresh_replays_once(stack: Stack, browser: Browser, upstream: tuple[Upstream, str]) -> None:
    api = upstream[0]
    first = (await browser.request("GET", f"{stack.url}/api/items", headers=XHR)).json()["token"]
    api.rejected.add(first)  # the upstream stops accepting it (revoked, key rotated, ...)
    response = await browser.request("POST", f"{stack.url}/api/items", headers=XHR, content=b'{"n": 1}')
    assert response.status_code == 200
    assert response.json()["token"] != first
    assert response.json()["body"] == '{"n": 1}'  # the replay carried the same body
    assert stack.provider.refresh_calls == 1
    assert [fingerprint(s["token"]) for s in api.seen[-2:]] == [first, response.json()["token"]]


async def test_a_second_401_passes_through(stack: Stack, browser: Browser, upstream: tuple[Upstream, str]) -> None:
    upstream[0].reject_all = True
    response = await browser.request("GET", f"{stack.url}/api/items", headers=XHR)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert stack.provider.refresh_calls == 1  # refreshed once, replayed once, then gave up: no loop
    assert len(upstream[0].seen) == 2


async def _expire(stack: Stack, browser: Browser, redis_url: str) -> None:
    await expire_in_store(stack.app, redis_url, browser.cookies(stack.url)["__Host-bff"])


async def test_proactive_refresh_of_an_expired_token(stack: Stack, browser: Browser, redis_url: str) -> None:
    before = stack.provider.token_responses[0]["access_token"]
    await _expire(stack, browser, redis_url)
    responses = await asyncio.gather(
        *(browser.request("GET", f"{stack.url}/api/items", headers=XHR) for _ in range(20))
    )
    tokens = {r.json()["token"] for r in responses}
    assert len(tokens) == 1
    assert fingerprint(before) not in tokens
    assert stack.provider.refresh_calls == 1
    assert stack.provider.reuse_detected == 0


async def test_invalid_grant_ends_the_session_and_clears_the_cookie(
    stack: Stack, browser: Browser, redis_url: str
) -> None:
    await _expire(stack, browser, redis_url)
    refresh_token = stack.provider.token_responses[0]["refresh_token"]
    async with httpx.AsyncClient() as http:  # an admin revokes the grant at the IdP
        await http.post(
            f"{stack.idp_url}/revoke",
            data={"token": refresh_token},
            auth=("spa-bff", stack.provider.client_secret or ""),
        )
    response = await browser.request("GET", f"{stack.url}/api/items", headers=XHR)
    assert response.status_code == 401
    assert response.json()["error"] == "session_expired"
    assert any(h.startswith("__Host-bff=") and "Max-Age=0" in h for h in response.headers.get_list("set-cookie"))
    assert (await browser.request("GET", f"{stack.url}/bff/user", headers=XHR)).status_code == 401


async def test_an_idp_outage_keeps_the_session(stack: Stack, browser: Browser, redis_url: str) -> None:
    await _expire(stack, browser, redis_url)
    stack.provider.fail_token_endpoint_with = 502
    response = await browser.request("GET", f"{stack.url}/api/items", headers=XHR)
    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"
    assert int(response.headers["retry-after"]) >= 1
    assert "set-cookie" not in response.headers
    stack.provider.fail_token_endpoint_with = None
    assert (await browser.request("GET", f"{stack.url}/bff/user", headers=XHR)).status_code == 200
    await asyncio.sleep(int(response.headers["retry-after"]))  # after the back-off, the refresh goes through
    again = await browser.request("GET", f"{stack.url}/api/items", headers=XHR)
    assert again.status_code == 200, json.dumps(again.json())
