"""Fault injection against real ``bff serve`` processes, on asyncio and on uvloop: Redis and the reference IdP are
killed, paused and slowed while logged-in clients keep calling an API through bff, and the invariants of
:mod:`tests.faults.bed` are checked afterwards (answers within the deadline, no session lost unless the IdP refused
it, no refresh token presented twice, no lock beyond its lease, recovery at once, descriptors and memory back to
their level).

``bff serve`` runs on the test's own interpreter, or on the one ``BFF_FAULTS_PYTHON`` names (another Python version
with bff's dependencies installed), to run the same faults against it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.bed import ACCESS_TOKEN_TTL, CLIENTS, OIDC_TIMEOUT, RECOVERY, Bed, running_bed
from tests.support.redis_server import RedisProcess

pytestmark = [pytest.mark.faults, pytest.mark.redis]

#: Seconds of load before the first fault (the resource baseline is taken then), between faults, and after the last.
WARMUP, GAP, AFTER = 1.0, 0.5, RECOVERY + 0.5

#: Refresh attempts the IdP turns away (at least) before it comes back.
IDP_DOWN_FAILURES = 3

#: A fault: at most how long, how to apply and lift it, and optionally when it has done enough.
Fault = (
    tuple[float, Callable[[], None], Callable[[], None]]
    | tuple[float, Callable[[], None], Callable[[], None], Callable[[], bool]]
)


@pytest.fixture(params=["asyncio", "uvloop"])
def bed(request: pytest.FixtureRequest, tmp_path: Path, redis_process: RedisProcess) -> Iterator[Bed]:
    with running_bed(request.param, tmp_path, redis_process) as running:
        assert running.runs_uvloop() == (request.param == "uvloop"), "bff serve did not run on the loop asked for"
        yield running


async def run(bed: Bed, faults: list[Fault], *, clients: int = CLIENTS) -> None:
    await bed.sign_in(clients)
    async with bed.load():
        await asyncio.sleep(WARMUP)
        bed.baseline = bed.resources()
        for fault in faults:
            await bed.fault(*fault)
            await asyncio.sleep(GAP)
        await asyncio.sleep(AFTER - GAP)
    violations = await bed.violations()
    assert not violations, "\n".join(violations) + "\n" + bed.describe()


async def test_redis_paused_killed_and_slowed_and_a_slow_idp(bed: Bed) -> None:
    """Redis SIGSTOPped, then unreachable (connections reset, new ones refused), then slow; then an IdP slower
    than usual but within ``[oidc] timeout``."""
    redis_server, redis_relay, idp_relay = bed.redis_server, bed.redis_relay, bed.idp_relay
    await run(
        bed,
        [
            (1.2, redis_server.pause, redis_server.resume),
            (1.0, redis_relay.kill, redis_relay.revive),
            (1.0, lambda: redis_relay.slow(0.1), lambda: redis_relay.slow(0)),
            (1.0, lambda: idp_relay.slow(OIDC_TIMEOUT * 0.4), lambda: idp_relay.slow(0)),
        ],
    )


async def test_idp_down_then_back_recovers_at_once(bed: Bed) -> None:
    """The IdP down (connections reset) until every access token has expired and bff's refreshes failed three
    times; it comes back right after a failed refresh (the moment a back-off, if any, is longest).

    The IdP crashes: from then on no request reaches it, and a refresh it already got is answered before the
    connection is reset (``Relay.crash``), as a crashed IdP would not have processed it. A refresh cut after the IdP
    processed it is out of scope here: its outcome is unknowable to any client (the README's token lifecycle: an IdP
    whose answer is lost; one with a reuse grace window accepts the replay, one without ends the session), and the
    strict check that no refresh token is presented twice would rightly flag it."""
    relay = bed.idp_relay
    crashed_at = [0.0]

    def crash() -> None:
        crashed_at[0] = time.monotonic()
        relay.crash()

    def enough() -> bool:
        now = time.monotonic()
        expired = now - crashed_at[0] > ACCESS_TOKEN_TTL + 0.2
        return expired and relay.resets >= IDP_DOWN_FAILURES and now - relay.last_reset < 0.1

    await run(bed, [(5.0, crash, relay.revive, enough)])


async def test_idp_slower_than_its_timeout_loses_no_session(bed: Bed) -> None:
    """The IdP answering later than ``[oidc] timeout`` for a moment: it still rotates the refresh token it was
    sent. One session, so that the process-wide back-off after the failure is short and the next refresh comes
    within the test: it must not present the refresh token the IdP already rotated."""
    idp_relay = bed.idp_relay
    await run(bed, [(1.2, lambda: idp_relay.slow(OIDC_TIMEOUT + 0.5), lambda: idp_relay.slow(0))], clients=1)


async def test_idp_stalled_beyond_its_timeout_hangs_nothing(bed: Bed) -> None:
    """The IdP stalled as if SIGSTOPped for longer than ``[oidc] timeout`` (the refresh requests it holds are
    processed when it continues), under four sessions."""
    await run(bed, [(1.5, bed.idp_relay.stall, bed.idp_relay.resume)])
