"""The check that gates a peer's row (``tests.bench.peers.check_proxy``), against proxies that get one thing wrong;
``make bench-smoke`` runs it on the real peers, and the clock of the parts (``tests.bench.parts``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.bench.nginx import UPSTREAM_BODY
from tests.bench.parts import FULL_BUDGET, Parts
from tests.bench.peers import check_proxy
from tests.support.servers import serve

GOOD_TOKEN = "token-the-idp-issued"
COOKIE = {"Cookie": "sid=1"}


def _idp() -> Starlette:
    async def userinfo(request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {GOOD_TOKEN}":
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        return JSONResponse({"sub": "alice", "preferred_username": "alice"})

    return Starlette(routes=[Route("/userinfo", userinfo)])


def _proxy(*, body: str = UPSTREAM_BODY, token: str = GOOD_TOKEN, anonymous_token: bool = False) -> Starlette:
    """A stand-in for a peer: what the upstream would answer through it, with the flaws asked for."""

    async def api(request: Request) -> Response:
        logged_in = request.headers.get("cookie") == COOKIE["Cookie"]
        if request.url.path.endswith("/_bench/authorization") and (logged_in or anonymous_token):
            return PlainTextResponse(f"Bearer {token}" if token else "")
        if not logged_in:
            return JSONResponse({"error": "unauthenticated"}, status_code=401)
        return Response(body, media_type="application/json")

    return Starlette(routes=[Route("/api/{rest:path}", api)])


@pytest.fixture(scope="module")
def idp() -> Iterator[str]:
    with serve(_idp(), lifespan="off") as url:
        yield url


async def test_a_proxy_that_passes_the_body_and_the_users_bearer_passes(idp: str) -> None:
    with serve(_proxy(), lifespan="off") as url:
        found = await check_proxy("peer", url, COOKIE, idp)
    assert f"body identical ({len(UPSTREAM_BODY)} B)" in found
    assert "no token without the cookie (401)" in found


@pytest.mark.parametrize(
    ("flaw", "proxy", "message"),
    [
        ("changes the body", _proxy(body=UPSTREAM_BODY.replace("shipped", "pending")), "not the upstream's body"),
        ("sends no bearer", _proxy(token=""), "saw no bearer token"),
        ("sends a token the IdP refuses", _proxy(token="forged"), "the IdP refused the bearer"),
        ("sends a token without a session", _proxy(anonymous_token=True), "without the session cookie"),
    ],
)
async def test_a_proxy_that_gets_one_thing_wrong_is_not_timed(
    idp: str, flaw: str, proxy: Starlette, message: str
) -> None:
    with serve(proxy, lifespan="off") as url, pytest.raises(RuntimeError, match=message):
        await check_proxy(f"peer that {flaw}", url, COOKIE, idp)


def test_the_benchmark_over_its_budget_fails_and_names_the_slowest_part() -> None:
    parts = Parts()
    parts.elapsed = [("setup", 5.0), ("peers", FULL_BUDGET), ("report", 1.0)]
    outcome = parts.outcome(smoke=False)
    assert outcome.failed(smoke=False)
    assert "slowest part: peers" in outcome.measured
    parts.elapsed = [("setup", 5.0), ("peers", 30.0)]
    assert not parts.outcome(smoke=False).failed(smoke=False)
