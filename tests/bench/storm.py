"""The refresh storm: N concurrent requests on one session whose access token has just expired.

One keep-alive connection per request, opened by a warm-up burst, so that connection set-up is in neither burst.
Then a *normal* burst on the valid token (the p99 the storm is compared with: N requests at once queue in the server
whatever their token), the IdP's own latency (its token endpoint, with the artificial delay), and the storm.
Checked: every request answered 200, the IdP saw exactly one refresh and refused none, the session holds a new
token.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import aiohttp

from tests.bench.idp import IdP
from tests.bench.report import Outcome, ms
from tests.bench.servers import API_PATH, Bff


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else math.nan


@dataclass(frozen=True)
class Burst:
    statuses: list[int]
    latencies: list[float]

    @property
    def ok(self) -> int:
        return self.statuses.count(200)

    @property
    def p50(self) -> float:
        return percentile(self.latencies, 0.50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 0.99)


@dataclass(frozen=True)
class StormResult:
    concurrency: int
    normal: Burst
    storm: Burst
    idp_delay: float
    #: The IdP token endpoint's own median latency, with the delay.
    idp_latency: float
    refreshes: int
    refresh_refused: int
    token_changed: bool

    @property
    def p99_bound(self) -> float:
        return 2 * self.idp_latency + self.normal.p99

    @property
    def correct(self) -> bool:
        return (
            self.storm.ok == self.concurrency
            and self.normal.ok == self.concurrency
            and self.refreshes == 1
            and self.refresh_refused == 0
            and self.token_changed
        )


async def burst(http: aiohttp.ClientSession, url: str, headers: Mapping[str, str], n: int) -> Burst:
    async def one() -> tuple[int, float]:
        start = time.perf_counter()
        try:
            async with http.get(url, headers=headers) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, OSError):
            status = 0
        return status, time.perf_counter() - start

    results = await asyncio.gather(*(one() for _ in range(n)))
    return Burst([status for status, _ in results], [latency for _, latency in results])


async def run_storm(bff: Bff, idp: IdP, *, concurrency: int, idp_delay: float) -> StormResult:
    url = bff.url + API_PATH
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), timeout=timeout) as http:
        await burst(http, url, bff.headers, concurrency)  # warm-up: one connection per request
        normal = await burst(http, url, bff.headers, concurrency)
        await idp.set_delay(idp_delay)
        try:
            idp_latency = await idp.token_latency(5)
            before = await idp.stats()
            expired = await bff.expire_access_token()
            storm = await burst(http, url, bff.headers, concurrency)
            after = await idp.stats()
        finally:
            await idp.set_delay(0)
    current = await bff.access_token()
    return StormResult(
        concurrency=concurrency,
        normal=normal,
        storm=storm,
        idp_delay=idp_delay,
        idp_latency=idp_latency,
        refreshes=int(after["refresh_calls"] - before["refresh_calls"]),
        refresh_refused=int(after["refresh_refused"] - before["refresh_refused"]),
        token_changed=current is not None and current != expired,
    )


def storm_outcomes(name: str, storm: StormResult) -> list[Outcome]:
    return [
        Outcome(
            f"refresh storm ({name}): {storm.concurrency} concurrent requests, one expired token -> 1 IdP refresh, "
            "all 200",
            f"{storm.refreshes} refresh(es), {storm.storm.ok}/{storm.concurrency} OK, refused {storm.refresh_refused}, "
            f"new token stored: {'yes' if storm.token_changed else 'no'}",
            storm.correct,
            "check",
        ),
        Outcome(
            f"refresh storm ({name}): p99 < 2 x IdP latency + normal p99",
            f"{ms(storm.storm.p99)} < 2 x {ms(storm.idp_latency)} + {ms(storm.normal.p99)} = {ms(storm.p99_bound)}",
            storm.storm.p99 < storm.p99_bound,
        ),
    ]
