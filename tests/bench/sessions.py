"""The realistic case: one logged-in session against 10,000, requests spread uniformly and Zipf-like over them.

Three bff processes of this tree (one worker each, all on the server core) are loaded at the same time, one wrk
each, in interleaved rounds: run after run this machine's speed drifts by tens of percent, but servers loaded
together see the same machine, so the ratio of their CPU per request is steady (as ``comparison.py``). Every wrk
runs the same Lua script over a precomputed cookie table (``rotating_cookies_script``): one cookie repeated, a
uniform draw over the sessions, or a Zipf-like draw (weight of the k-th session ``1 / k**s``), so the load
generator's work per request is the same in every row; only the bff processes' CPU is counted.

Before the rounds each 10,000-session bff is sent every session once (the state of a worker that has served these
users for a while: each session's record decoded once); that pass is timed too, as the cold cost of a lookup that
decodes (both bffs at once, over ``client.py``'s keep-alive connections). Worker memory (``VmRSS``) after the rounds
shows what remembering the sessions costs.

:func:`started` keeps the three bffs up while the caller works with them: the peers' comparison
(``peers/compare.py``) loads the uniform one and the one-session one each alone, beside the peers, with the same
scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tests.bench.client import each_once
from tests.bench.parts import PARTS
from tests.bench.report import Outcome, Run
from tests.bench.servers import API_PATH, COOKIE_NAME, Bff
from tests.bench.system import CpuPlan, cpu_seconds_each, process_tree
from tests.bench.wrk import Load, WrkResult, rotating_cookies_script, run_wrk_at_once

#: Logged-in sessions of the realistic rows (smoke mode: ``SMOKE_SESSIONS``).
SESSIONS = 10_000
SMOKE_SESSIONS = 500
#: The Zipf-like mix's exponent: a few users very active, a long tail of occasional ones.
ZIPF_S = 1.1
#: Cookies in each precomputed table (wrk cycles through it).
TABLE = 50_000
#: The realistic rows' CPU per request may be at most this much of the one-session row's.
MAX_RATIO = 1.2
#: Keep-alive connections of the pass that sends every session once (one request in flight on each).
WARM_CONNECTIONS = 16

NAMES = ("bff-sessions-one", "bff-sessions-uniform", "bff-sessions-zipf")


class _Mode(Protocol):
    @property
    def smoke(self) -> bool: ...
    @property
    def duration(self) -> float: ...
    @property
    def warmup(self) -> float: ...
    @property
    def connections(self) -> int: ...
    @property
    def budget_rounds(self) -> int: ...


class _Context(Protocol):
    @property
    def mode(self) -> _Mode: ...
    @property
    def plan(self) -> CpuPlan: ...
    @property
    def tools(self) -> dict[str, str]: ...
    @property
    def workdir(self) -> Path: ...


StartBff = Callable[[str], AbstractAsyncContextManager[Bff]]


def population(smoke: bool) -> int:
    """The logged-in sessions of the many-session rows."""
    return SMOKE_SESSIONS if smoke else SESSIONS


def cookie_tables(cookies: Sequence[str], length: int, seed: int = 18) -> dict[str, list[str]]:
    """The three rows' tables: one session repeated, uniform over ``cookies``, Zipf-like over them."""
    rng = random.Random(seed)
    weights = [1 / (rank**ZIPF_S) for rank in range(1, len(cookies) + 1)]
    ranked = list(cookies)
    rng.shuffle(ranked)  # which session is the most active one is arbitrary
    return {
        "one": [cookies[0]] * length,
        "uniform": rng.choices(cookies, k=length),
        "zipf": rng.choices(ranked, weights=weights, k=length),
    }


@dataclass(frozen=True)
class SessionRows:
    sessions: int
    #: Per round: one session, uniform, Zipf-like.
    rounds: list[tuple[WrkResult, WrkResult, WrkResult]]
    #: CPU µs per request of the pass that sent every session once (each lookup decoded), per 10,000-session bff.
    cold_us: tuple[float, float]
    #: Answers other than 200 in that pass (status and the start of the body).
    cold_failures: list[str]
    #: VmRSS of each bff after the rounds, bytes.
    rss: tuple[int, int, int]

    def ratios(self, row: int) -> list[float]:
        return [(r[row].cpu_us_per_request or 0) / (r[0].cpu_us_per_request or 1) for r in self.rounds]

    def runs(self) -> list[Run]:
        """The round of the median uniform ratio, one row per bff."""
        ratios = self.ratios(1)
        median = sorted(range(len(ratios)), key=ratios.__getitem__)[len(ratios) // 2]
        one, uniform, zipf = self.rounds[median]
        n = f"{self.sessions:,}"
        return [
            Run("bff, 1 worker, one session (paired with the two rows below)", one),
            Run(f"bff, 1 worker, {n} sessions, uniform", uniform),
            Run(f"bff, 1 worker, {n} sessions, Zipf-like (s={ZIPF_S})", zipf),
        ]

    def outcomes(self) -> list[Outcome]:
        failed = sum(r.failures for round_ in self.rounds for r in round_)
        cold = len(self.cold_failures)
        outcomes = [
            Outcome(
                "realistic rows: every request answered 2xx (each session's first one too)",
                f"{failed} failed; first pass {cold} failed{': ' if cold else ''}{'; '.join(self.cold_failures[:3])}",
                failed == 0 and cold == 0,
                "check",
            ),
        ]
        for row, what in ((1, "uniform"), (2, f"Zipf-like, s={ZIPF_S}")):
            ratios = self.ratios(row)
            outcomes.append(
                Outcome(
                    f"{self.sessions:,} sessions ({what}): <= {MAX_RATIO}x the CPU/request of one session",
                    f"{statistics.median(ratios):.3f}x (rounds {min(ratios):.3f}-{max(ratios):.3f})",
                    statistics.median(ratios) <= MAX_RATIO,
                )
            )
        return outcomes

    def note(self, duration: float) -> str:
        mib = [r / 2**20 for r in self.rss]
        return (
            f"Realistic rows: three bff processes on the server core at the same time, one wrk each over a "
            f"precomputed cookie table, {len(self.rounds)} round(s) of {duration:.0f} s; {self.sessions:,} sessions "
            f"uniform {statistics.median(self.ratios(1)):.3f}x, Zipf-like {statistics.median(self.ratios(2)):.3f}x "
            f"the CPU/request of one session. Sending every session once first (each lookup decodes; a Python "
            f"client, {WARM_CONNECTIONS} in flight to each of the two bffs at once, so less batching than under "
            f"wrk): {self.cold_us[0]:.0f} and "
            f"{self.cold_us[1]:.0f} µs CPU/request. Worker memory (VmRSS) after the rounds: {mib[0]:.0f} MiB with "
            f"one session, {mib[1]:.0f} MiB uniform, {mib[2]:.0f} MiB Zipf-like."
        )


@dataclass(frozen=True)
class Realistic:
    """The three bffs of the rows (one session, uniform, Zipf-like), their sessions created, the two many-session
    ones sent every session once; each with its wrk load over its cookie table."""

    sessions: int
    servers: tuple[Bff, Bff, Bff]
    loads: tuple[Load, Load, Load]
    cold_us: tuple[float, float]
    cold_failures: list[str]

    def paired(self, ctx: _Context) -> SessionRows:
        """The interleaved rounds: all three loaded at the same time, ``budget_rounds`` times."""
        mode = ctx.mode

        def at_once(duration: float) -> list[WrkResult]:
            return run_wrk_at_once(
                ctx.tools["wrk"], self.loads, duration=duration, connections=mode.connections, threads=1,
                cores=ctx.plan.load, plan=ctx.plan,
            )  # fmt: skip

        PARTS.mark(f"realistic case: {mode.budget_rounds} rounds of the three bffs at the same time")
        at_once(mode.warmup)
        rounds = []
        for _ in range(mode.budget_rounds):
            a, b, c = at_once(mode.duration)
            rounds.append((a, b, c))
        one, uniform, zipf = (_rss(bff) for bff in self.servers)
        return SessionRows(self.sessions, rounds, self.cold_us, self.cold_failures, (one, uniform, zipf))


@contextlib.asynccontextmanager
async def started(ctx: _Context, start: StartBff) -> AsyncIterator[Realistic]:
    """The rows' bffs, ready to be loaded; ``start(name)``: a logged-in ``bff serve`` of this tree, one worker, on
    the server core. They stay up inside the block (the peers' comparison loads two of them alone)."""
    count = population(ctx.mode.smoke)
    async with start(NAMES[0]) as one, start(NAMES[1]) as uniform, start(NAMES[2]) as zipf:
        servers = (one, uniform, zipf)
        cookies = await one.create_sessions(count)
        tables = cookie_tables(cookies, TABLE)
        loads = []
        for bff, (name, table) in zip(servers, tables.items(), strict=True):
            directory = ctx.workdir / f"sessions-{name}"
            directory.mkdir(exist_ok=True)
            script = rotating_cookies_script(directory, COOKIE_NAME, table)
            loads.append(Load(bff.url + API_PATH, {}, bff.process.pid, script))
        # Both passes at once: each bff's CPU is its own, and the pass is the client's work more than theirs.
        PARTS.mark(f"realistic case: every one of {count:,} sessions sent once to two bffs")
        (cold_uniform, failed_uniform), (cold_zipf, failed_zipf) = await asyncio.gather(
            _every_session_once(uniform, cookies), _every_session_once(zipf, cookies)
        )
        yield Realistic(
            count, servers, (loads[0], loads[1], loads[2]), (cold_uniform, cold_zipf), failed_uniform + failed_zipf
        )


async def measure(ctx: _Context, start: StartBff) -> SessionRows:
    """The paired rows alone (``--only sessions``)."""
    async with started(ctx, start) as realistic:
        return realistic.paired(ctx)


async def _every_session_once(bff: Bff, cookies: Sequence[str]) -> tuple[float, list[str]]:
    """Each cookie's request once: the bff's CPU µs per request over the pass, and the answers other than 200."""
    pids = process_tree(bff.process.pid)
    before = sum(cpu_seconds_each(pids).values())
    headers = [{"Cookie": f"{COOKIE_NAME}={cookie}", "X-CSRF": "1"} for cookie in cookies]
    failed = await each_once(bff.url, API_PATH, headers, connections=WARM_CONNECTIONS)
    return (sum(cpu_seconds_each(pids).values()) - before) / len(cookies) * 1e6, failed


def _rss(bff: Bff) -> int:
    for line in Path(f"/proc/{bff.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
