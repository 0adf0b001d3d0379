"""The benchmark's output: the throughput table and the data plane's targets, as Markdown (the README's
"Performance" section is a copy of it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from tests.bench.wrk import WrkResult

Kind = Literal["target", "check"]


@dataclass(frozen=True)
class Run:
    name: str
    result: WrkResult


@dataclass(frozen=True)
class Outcome:
    """A performance target (enforced in full mode) or a correctness check (always enforced)."""

    name: str
    measured: str
    #: None: not applicable on this machine (``note`` says why).
    ok: bool | None
    kind: Kind = "target"
    note: str = ""

    def status(self, *, smoke: bool) -> str:
        if self.ok is None:
            return "n/a" + (f" ({self.note})" if self.note else "")
        text = "PASS" if self.ok else "FAIL"
        if smoke and self.kind == "target":
            text += " (smoke: not enforced)"
        return text + (f" ({self.note})" if self.note else "")

    def failed(self, *, smoke: bool) -> bool:
        return self.ok is False and (self.kind == "check" or not smoke)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.3f}x" if value and base else "-"


def runs_table(runs: Sequence[Run], baseline: WrkResult | None) -> list[str]:
    lines = [
        "| Run | req/s | p50 | p99 | CPU µs/request | req/s vs nginx | CPU/request: nginx ÷ this |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    base_cpu = baseline.cpu_us_per_request if baseline else None
    for run in runs:
        r = run.result
        cpu = r.cpu_us_per_request
        efficiency = _ratio(base_cpu, cpu) if cpu else "-"
        failures = f" ({r.failures} failed)" if r.failures else ""
        lines.append(
            f"| {run.name} | {r.rps:,.0f}{failures} | {ms(r.p50)} | {ms(r.p99)} | "
            f"{'-' if cpu is None else f'{cpu:.0f}'} | {_ratio(r.rps, baseline.rps if baseline else None)} | "
            f"{efficiency} |"
        )
    return lines


def outcomes_table(outcomes: Sequence[Outcome], *, smoke: bool) -> list[str]:
    lines = ["| Target / check | Measured | Result |", "|---|---|---|"]
    lines += [f"| {o.name} | {o.measured} | {o.status(smoke=smoke)} |" for o in outcomes]
    return lines
