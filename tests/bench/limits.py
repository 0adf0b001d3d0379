"""The edge limits' cost (the "limits" row): this tree's bff as served against the same bff with the edge
limits' per-request checks off (``tests.bench.limits_off``: head bytes and fields counted, the head, body and
keep-alive deadlines), both one worker on the server core at the same time, one wrk each, a few rounds: the ratio of
their CPU per request, every round listed (the telemetry rows' method). No target: the row is reported.

Before the rounds both are sent a request head with more header fields than ``[server] max_request_headers``: bff as
served must refuse it (431), the limits-off bff must pass it to the app (200), so the row cannot go on pairing two
identical servers unnoticed.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import httpx

from bff.config import ServerSettings
from tests.bench.context import ROOT, Context, at_once, logged_in_bff
from tests.bench.parts import PARTS
from tests.bench.report import Outcome
from tests.bench.servers import Bff
from tests.bench.wrk import WrkResult

NAMES = ("bff-limits-on", "bff-limits-off")
#: What ``python -m`` runs for each: bff itself, and its launcher with the limits off.
MODULES = ("bff", "tests.bench.limits_off")
#: Rounds in the full benchmark (``--only limits`` runs ``--rounds``, default 5): the two servers differ by a few
#: hundred instructions per request, which more rounds would not resolve on a shared machine either.
FULL_ROUNDS = 3

#: ``start(name, module)``: a logged-in ``bff serve`` of this tree, one worker, on the server core.
StartBff = Callable[[str, str], AbstractAsyncContextManager[Bff]]
#: ``at_once(servers, seconds)``: one wrk per server, all at the same time, each server's CPU measured.
AtOnce = Callable[[Sequence[Bff], float], list[WrkResult]]


@dataclass(frozen=True)
class LimitsCost:
    #: Per round: (limits on, limits off).
    rounds: list[tuple[WrkResult, WrkResult]]
    duration: float
    #: The status each answered to a head over ``max_request_headers``: (on, off).
    over_limit: tuple[int, int]

    @property
    def ratios(self) -> list[float]:
        return [(on.cpu_us_per_request or 0) / (off.cpu_us_per_request or 1) for on, off in self.rounds]

    def outcomes(self) -> list[Outcome]:
        failed = sum(on.failures + off.failures for on, off in self.rounds)
        on_status, off_status = self.over_limit
        check = Outcome(
            "limits on vs off: on refuses a head over max_request_headers (431), off passes it (200); all 2xx",
            f"on {on_status}, off {off_status}; {failed} failed",
            self.over_limit == (431, 200) and failed == 0,
            "check",
        )
        ratios = self.ratios
        each = "; ".join(
            f"{r:.3f} ({on.cpu_us_per_request or 0:.1f}/{off.cpu_us_per_request or 0:.1f} µs)"
            for r, (on, off) in zip(ratios, self.rounds, strict=True)
        )
        rps = statistics.median(on.rps / off.rps for on, off in self.rounds)
        measured = (
            f"{statistics.median(ratios):.3f}x CPU/request, req/s {rps:.2f}x; rounds (on/off): {each}; "
            f"{len(ratios)} of {self.duration:.0f} s"
        )
        return [check, Outcome("edge limits on, against off (paired; no target)", measured, None)]


async def _over_limit_status(bff: Bff) -> int:
    """The status of ``/readyz`` asked with one header field more than the ``[server]`` default allows."""
    fields = [(f"x-pad-{i}", "1") for i in range(ServerSettings().max_request_headers + 1)]
    async with httpx.AsyncClient(timeout=10) as client:
        return (await client.get(f"{bff.url}/readyz", headers=fields)).status_code


async def measure(start: StartBff, at_once: AtOnce, *, warmup: float, duration: float, rounds: int) -> LimitsCost:
    """The paired rounds (see the module docstring)."""
    PARTS.mark(f"bff with the edge limits on and off at the same time, {rounds} rounds")
    async with start(NAMES[0], MODULES[0]) as on, start(NAMES[1], MODULES[1]) as off:
        over_limit = (await _over_limit_status(on), await _over_limit_status(off))
        at_once((on, off), warmup)
        measured = []
        for _ in range(rounds):
            limits_on, limits_off = at_once((on, off), duration)
            measured.append((limits_on, limits_off))
    return LimitsCost(measured, duration, over_limit)


async def measure_paired(ctx: Context, rounds: int) -> list[Outcome]:
    """The paired "limits on vs off" row (``tests.bench.limits``): its outcomes."""
    cost = await measure(
        lambda name, module: logged_in_bff(ctx, name, workers=1, source=ROOT, module=module),
        lambda servers, seconds: at_once(ctx, servers, seconds, ctx.plan.load),
        warmup=ctx.mode.warmup, duration=ctx.mode.duration, rounds=rounds,
    )  # fmt: skip
    return cost.outcomes()
