"""``--compare-with DIR``: this tree's bff and that tree's, paired (loaded at the same time, one wrk each)."""

from __future__ import annotations

import statistics
from pathlib import Path

from tests.bench.context import Context, at_once
from tests.bench.servers import Bff


def paired_comparison(ctx: Context, compare_with: Path, other: Bff, this: Bff) -> str:
    """Both trees' bff on the server core at the same time, one wrk each: run after run, this box's speed drifts by
    tens of percent, but two servers loaded together see the same machine, so their ratio is steady."""
    ratios, speedups = [], []
    for _ in range(ctx.mode.budget_rounds):
        theirs, ours = at_once(ctx, (other, this), ctx.mode.duration, ctx.plan.load)
        if theirs.failures or ours.failures:
            raise RuntimeError(f"paired comparison: {theirs.failures} and {ours.failures} requests failed")
        if not (theirs.rps and ours.rps and theirs.cpu_us_per_request and ours.cpu_us_per_request):
            continue  # a round in which one server was starved gives no ratio: the others still do
        ratios.append((ours.cpu_us_per_request or 0) / (theirs.cpu_us_per_request or 1))
        speedups.append(ours.rps / theirs.rps)
    if not ratios:
        raise RuntimeError("paired comparison: in every round a server served nothing (the machine is overloaded)")
    return (
        f"Paired with {compare_with} (both on the server core at the same time, one wrk each, "
        f"{len(ratios)} rounds of {ctx.mode.duration:.0f} s): this tree's CPU/request is "
        f"{statistics.median(ratios):.2f}x that one's (rounds {min(ratios):.2f}-{max(ratios):.2f}), "
        f"its req/s {statistics.median(speedups):.2f}x."
    )
