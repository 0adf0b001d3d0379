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
from tests.bench.peers.compare import Comparison, Row, peer_outcomes, peer_runs
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


def _bff(*cpu: float) -> Row:
    """bff's row with one round per CPU figure (seconds for 10,000 requests: 3.0 is 300 µs per request)."""
    return Row("bff", tuple(_result(10_000, c) for c in cpu))


def _compare(*peer_rows: Row, many: Row | None = None, one: Row | None = None) -> Comparison:
    many = many or _bff(3.0)
    return Comparison(many, one or _bff(*(1.5 for _ in many.results)), list(peer_rows), 1, 10, 3)


def test_a_skipped_peer_is_said_so_and_its_target_not_enforced() -> None:
    rows = Row("Apache", skipped="apache2 not found; install with: apt-get install -y apache2")
    [outcome] = peer_outcomes(_compare(rows))
    assert outcome.ok is None
    assert "SKIPPED: apache2 not found" in outcome.measured
    assert not outcome.failed(smoke=False)


def test_bff_over_the_share_of_a_peers_cpu_fails_the_run() -> None:
    # 900 and 800 µs against bff's 300: 0.33x and 0.375x; bff's one session (150 µs): 0.17x and 0.19x.
    within, over = _result(10_000, 9.0), _result(10_000, 8.0)
    rows = [Row("near", (within,), check="checked"), Row("far", (over,), check="checked")]
    near_check, near, far_check, far = peer_outcomes(_compare(*rows))
    assert near_check.ok
    assert far_check.ok
    assert not near.failed(smoke=False)
    assert far.failed(smoke=False)
    assert not far.failed(smoke=True)
    assert far.measured.startswith("0.375x")
    assert far.measured.endswith("bff with one session: 0.19x")


def test_each_ratio_is_the_median_of_the_rounds_of_bff_over_the_peer_in_the_same_round() -> None:
    # The machine slows down in round 2 (everything costs twice as much) and is odd in round 3 for the peer alone.
    many = _bff(3.0, 6.0, 3.0)
    peer = Row("peer", (_result(10_000, 10.0), _result(10_000, 20.0), _result(10_000, 5.0)), check="checked")
    _, target = peer_outcomes(_compare(peer, many=many))
    # Rounds 0.30x, 0.30x, 0.60x: the median is 0.30x; beside it, each row's median CPU per request.
    assert target.measured.startswith("0.300x (rounds 0.30-0.60; 300 vs 1000 µs;")
    assert not target.failed(smoke=False)
    assert peer.median_round == peer.results[0]


def test_a_peer_that_did_not_start_fails_its_check_even_in_smoke() -> None:
    rows = Row("Node BFF", check="did not start: node-bff exited with 1", check_ok=False)
    [check] = peer_outcomes(_compare(rows))
    assert check.failed(smoke=True)


def test_the_table_has_bffs_two_cases_alone_and_each_timed_peer() -> None:
    timed = Row("Node BFF", (_result(10_000, 6.0),), check="checked")
    skipped = Row("Apache", skipped="not installed")
    names = [run.name for run in peer_runs(_compare(timed, skipped))]
    assert names == ["bff, alone", "bff, alone", "Node BFF, 1 process, one session"]


def test_without_its_modules_apache_is_skipped_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apache, "MODULES", Path("/nonexistent/apache2/modules"))
    with pytest.raises(Skipped, match="apt-get install -y apache2 libapache2-mod-auth-openidc"):
        apache.binary()
