"""The benchmark's clock: each progress line starts a part, which lasts until the next; the elapsed time of each
part is printed at the end, and the whole run is held to a budget (``make bench`` under 8 minutes). Not to be confused
with ``budget.py``: the CPU caps of the scaling measurement."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from tests.bench.report import Outcome

#: ``make bench`` must finish within 10 minutes: it is held to 8, so that a slower part fails here before the
#: 10-minute rule breaks. ``make bench-smoke``'s budget is reported, not enforced (its parts are too short to time).
FULL_BUDGET = 480.0
SMOKE_BUDGET = 120.0


@dataclass
class Parts:
    started: float = field(default_factory=time.monotonic)
    #: (part, seconds) of every part that ended.
    elapsed: list[tuple[str, float]] = field(default_factory=list)
    _current: str = "setup"
    _since: float = field(default_factory=time.monotonic)

    def mark(self, part: str) -> None:
        """``part`` begins (and the one before ends)."""
        now = time.monotonic()
        self.elapsed.append((self._current, now - self._since))
        self._current, self._since = part, now
        sys.stderr.write(f"bench: {part} ({now - self.started:.0f} s in)\n")
        sys.stderr.flush()

    def finish(self) -> float:
        """End the last part; the total seconds."""
        self.mark("report")
        return time.monotonic() - self.started

    def table(self) -> list[str]:
        lines = ["| Part | Elapsed |", "|---|--:|"]
        lines += [f"| {part} | {seconds:.1f} s |" for part, seconds in self.elapsed]
        return lines

    def outcome(self, *, smoke: bool) -> Outcome:
        total = sum(seconds for _, seconds in self.elapsed)
        budget = SMOKE_BUDGET if smoke else FULL_BUDGET
        slowest = max(self.elapsed, key=lambda e: e[1], default=("-", 0.0))
        return Outcome(
            f"the whole benchmark within {budget:.0f} s",
            f"{total:.0f} s (slowest part: {slowest[0]}, {slowest[1]:.0f} s)",
            total <= budget,
        )


#: The run's clock (one benchmark per process).
PARTS = Parts()
