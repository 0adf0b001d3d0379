"""The telemetry rows: this tree's bff with metrics, the JSON access log or tracing on, against the same bff with
them off, both loaded at the same time (the paired method: a ratio the box's drift spares)."""

from __future__ import annotations

import contextlib
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tests.bench.context import ROOT, Context, Mode, at_once, logged_in_bff, progress
from tests.bench.report import Outcome
from tests.bench.system import free_port
from tests.bench.wrk import WrkResult
from tests.support.tracing import ExportedSpan

#: Telemetry rows of the paired measurement: (what is on, the config added to the plain bff's). The first is held to
#: MAX_TELEMETRY_RATIO; a tracing row (sampled at 100 %, exported to a local collector stub) goes here, reported as
#: its own row.
TELEMETRY_ROWS: tuple[tuple[str, Callable[[], str]], ...] = (
    (
        "metrics + JSON access log",
        lambda: f'\n[logging]\nformat = "json"\naccess_log = true\n\n[metrics]\nlisten = "127.0.0.1:{free_port()}"\n',
    ),
    # Each feature alone: these rows are loaded together, the plain bff beside them (see ``telemetry_costs``).
    ("metrics alone", lambda: f'\n[metrics]\nlisten = "127.0.0.1:{free_port()}"\n'),
    ("JSON access log alone", lambda: '\n[logging]\nformat = "json"\naccess_log = true\n'),
)
#: The tracing row (every request sampled, exported to a local collector stub), loaded beside the no-target rows.
TRACING = "tracing (100% sampled, OTLP/HTTP to a collector stub)"
#: Metrics and the JSON access log on may cost at most this much CPU per request of the same bff with them off.
MAX_TELEMETRY_RATIO = 1.08


@dataclass(frozen=True)
class TelemetryCost:
    """One telemetry row: CPU/request of bff with it on over bff with it off, both loaded at the same time."""

    what: str
    ratios: list[float]
    rps_ratios: list[float]
    cpu_on: list[float]
    cpu_off: list[float]
    #: The bff with it on, each round.
    results: tuple[WrkResult, ...] = ()

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def median_round(self) -> WrkResult:
        """The on-bff's result in the round of the median ratio."""
        return self.results[sorted(range(len(self.ratios)), key=self.ratios.__getitem__)[len(self.ratios) // 2]]

    def describe(self, duration: float) -> str:
        return (
            f"{self.ratio:.3f}x CPU/request ({statistics.median(self.cpu_on):.1f} vs "
            f"{statistics.median(self.cpu_off):.1f} µs; rounds {', '.join(f'{r:.3f}' for r in self.ratios)}, "
            f"{len(self.ratios)} of {duration:.0f} s), req/s {statistics.median(self.rps_ratios):.2f}x"
        )


async def telemetry_costs(ctx: Context, traces_to: str | None = None) -> list[TelemetryCost]:
    """Each telemetry row: this tree's bff with it on and the same bff with it off on the server core at the same
    time, one wrk each, a few rounds (the paired comparison's method: a ratio the box's drift spares).
    The first row (held to its target, ``budget_rounds``) is paired alone; the others (no target,
    ``stable_rounds``), and with ``traces_to`` tracing on (every request sampled, exported there), are loaded
    together, beside one plain bff, so that they cost one set of rounds between them."""
    # (what, the bff's name, its extra config, where it exports traces)
    members: list[tuple[str, str, str, str | None]] = [
        (what, f"bff-telemetry-on-{i}", config(), None) for i, (what, config) in enumerate(TELEMETRY_ROWS)
    ]
    if traces_to is not None:
        members.append((TRACING, "bff-tracing-on", "", traces_to))
    groups = [(members[:1], ctx.mode.budget_rounds), (members[1:], ctx.mode.stable_rounds)]
    costs = []
    for group, count in ((g, n) for g, n in groups if g):
        whats = ", ".join(what for what, *_ in group)
        progress(f"bff with {whats} on and off at the same time, {count} rounds")
        async with contextlib.AsyncExitStack() as stack:
            off = await stack.enter_async_context(logged_in_bff(ctx, "bff-telemetry-off", workers=1, source=ROOT))
            ons = [
                await stack.enter_async_context(
                    logged_in_bff(ctx, name, workers=1, source=ROOT, extra=extra, traces_to=traces)
                )
                for _, name, extra, traces in group
            ]
            at_once(ctx, (off, *ons), ctx.mode.warmup, ctx.plan.load)
            rounds = []
            for _ in range(count):
                plain, *observed = at_once(ctx, (off, *ons), ctx.mode.duration, ctx.plan.load)
                if plain.failures or any(o.failures for o in observed):
                    counts = "; ".join(f"{r.non_2xx} non-2xx, {r.socket_errors} socket" for r in (plain, *observed))
                    raise RuntimeError(f"telemetry ({whats}): requests failed (off, then on: {counts})")
                rounds.append((plain, observed))
        for k, (what, *_) in enumerate(group):
            cpu_off = [plain.cpu_us_per_request or 1.0 for plain, _ in rounds]
            cpu_on = [observed[k].cpu_us_per_request or 0.0 for _, observed in rounds]
            rps = [observed[k].rps / plain.rps for plain, observed in rounds]
            ratios = [on / base for on, base in zip(cpu_on, cpu_off, strict=True)]
            results = tuple(observed[k] for _, observed in rounds)
            costs.append(TelemetryCost(what, ratios, rps, cpu_on, cpu_off, results))
            # Printed as each group ends: a later group that fails does not take this row's figures with it.
            sys.stderr.write(f"bench: {costs[-1].what} on: {costs[-1].describe(ctx.mode.duration)}\n")
    return costs


def telemetry_outcomes(costs: Sequence[TelemetryCost], mode: Mode) -> list[Outcome]:
    outcomes = []
    for i, cost in enumerate(costs):
        if i == 0:
            name = f"{cost.what} on: <= {MAX_TELEMETRY_RATIO}x the CPU/request of off (paired)"
            outcomes.append(Outcome(name, cost.describe(mode.duration), cost.ratio <= MAX_TELEMETRY_RATIO))
        else:
            outcomes.append(Outcome(f"{cost.what} on, against off (paired)", cost.describe(mode.duration), None))
    return outcomes


def tracing_outcome(cost: TelemetryCost, spans: Sequence[ExportedSpan]) -> Outcome:
    """The tracing row's check: the collector stub received the proxied requests' server spans."""
    requests = sum(r.requests for r in cost.results)
    # Warm-up and login requests are traced too: more server spans than measured requests means none was dropped.
    served = sum(1 for s in spans if s.name == "GET /api")
    return Outcome(
        "tracing on: the collector stub received the proxied requests' server spans",
        f"{served:,} server spans ({requests:,} requests measured)",
        served > 0 and not any(r.failures for r in cost.results),
        "check",
    )
