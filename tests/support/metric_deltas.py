"""Exact metric deltas for tests: what changed in this process's metrics since a snapshot.

Metrics are process-wide and other tests moved them before: a test takes a ``MetricDeltas()`` before the traffic it
drives and asserts on what changed since, every changed series of a family at once, so a count that moved where it
must not (a joined refresh also counted ``ok``) fails the test too.
"""

from __future__ import annotations

from bff.telemetry import metrics

SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def _snapshot() -> dict[SampleKey, float]:
    return {
        (name, tuple(sorted(labels.items()))): value
        for metric in metrics.REGISTRY
        for name, labels, value in metrics.samples(metric, dict(metric.children))
    }


class MetricDeltas:
    def __init__(self) -> None:
        self._before = _snapshot()

    def changes(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Every series of the sample ``name`` that moved, by its sorted label pairs, with how much."""
        moved: dict[tuple[tuple[str, str], ...], float] = {}
        for (sample, labels), value in _snapshot().items():
            if sample == name and value != self._before.get((sample, labels), 0.0):
                moved[labels] = value - self._before.get((sample, labels), 0.0)
        return moved

    def by(self, name: str, label: str) -> dict[str, float]:
        """The moved series of ``name`` by the value of one label (the others must not tell them apart)."""
        moved: dict[str, float] = {}
        for labels, delta in self.changes(name).items():
            value = dict(labels)[label]
            assert value not in moved, f"{name}: {label}={value} moved in several series: {self.changes(name)}"
            moved[value] = delta
        return moved

    def total(self, name: str) -> float:
        """How much the unlabelled sample ``name`` moved."""
        return sum(self.changes(name).values())
