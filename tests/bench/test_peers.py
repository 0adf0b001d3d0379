"""The check that gates a peer's row (``tests.bench.peers.check_proxy``), against proxies that get one thing wrong
(``make bench-smoke`` runs it on the real peers); the peers' targets and skips; the clock of the parts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.bench.nginx import UPSTREAM_BODY
from tests.bench.parts import FULL_BUDGET, Parts
from tests.bench.peers import Skipped, apache, check_proxy
from tests.bench.peers.compare import PeerRow, peer_outcomes
from tests.bench.wrk import WrkResult
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


def _result(requests: int, cpu: float) -> WrkResult:
    return WrkResult(requests=requests, seconds=10, p50=0.01, p99=0.02, non_2xx=0, socket_errors=0, cpu=cpu)


def test_a_skipped_peer_is_said_so_and_its_target_not_enforced() -> None:
    rows = [PeerRow("Apache", skipped="apache2 not found; install with: apt-get install -y apache2")]
    [outcome] = peer_outcomes(rows, _result(10_000, 1.0), "bff")
    assert outcome.ok is None
    assert "SKIPPED: apache2 not found" in outcome.measured
    assert not outcome.failed(smoke=False)


def test_bff_over_the_share_of_a_peers_cpu_fails_the_run() -> None:
    bff = _result(10_000, 3.0)  # 300 µs per request
    within, over = _result(10_000, 9.0), _result(10_000, 8.0)  # 900 and 800 µs: 0.33x and 0.375x
    rows = [PeerRow("near", within, check="checked"), PeerRow("far", over, check="checked")]
    near_check, near, far_check, far = peer_outcomes(rows, bff, "bff")
    assert near_check.ok
    assert far_check.ok
    assert not near.failed(smoke=False)
    assert far.failed(smoke=False)
    assert not far.failed(smoke=True)
    assert far.measured.startswith("0.38x")


def test_a_peer_that_did_not_start_fails_its_check_even_in_smoke() -> None:
    rows = [PeerRow("Node BFF", check="did not start: node-bff exited with 1", check_ok=False)]
    [check] = peer_outcomes(rows, _result(10_000, 1.0), "bff")
    assert check.failed(smoke=True)


def test_without_its_modules_apache_is_skipped_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apache, "MODULES", Path("/nonexistent/apache2/modules"))
    with pytest.raises(Skipped, match="apt-get install -y apache2 libapache2-mod-auth-openidc"):
        apache.binary()
