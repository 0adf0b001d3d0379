"""The metric primitives: plain-Python counters, gauges and histograms, their families and the registry.

The hot path touches only plain Python: ``METRIC.labels(**kw)`` is called once, where a route or an outcome is
bound at start, and the child it returns is kept; ``child.inc()`` is an add and ``child.observe(seconds)`` a
``bisect`` into one short bucket list. No lock per request (one event loop per process; a scrape thread reading a
value mid-update sees the previous or the next one; a histogram's batch of pending observations is folded under a
lock, see ``HistogramChild``), no mmap, no label lookups per request. The catalogue of bff's metrics built from these
is ``bff.telemetry.metrics``.
"""

from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Generic, Literal, TypeVar

MetricKind = Literal["counter", "gauge", "histogram"]
#: How a gauge sums over worker processes: ``livesum`` over the live ones, ``max`` over all.
GaugeMode = Literal["livesum", "max"]

#: One bucket set for every histogram, 1 ms to 30 s (the upper bounds, ``le``); ``+Inf`` is implied.
BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: HTTP methods kept as themselves in ``http_request_method``; any other becomes ``_OTHER`` (OTel HTTP semconv).
STANDARD_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"})


def method_label(method: str) -> str:
    """``http_request_method``: the method, or ``_OTHER`` outside the standard set (bounded cardinality)."""
    return method if method in STANDARD_METHODS else "_OTHER"


class CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, n: float = 1.0) -> None:
        if n < 0:
            raise ValueError("a counter only goes up")
        self.value += n


class GaugeChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = value

    def inc(self, n: float = 1.0) -> None:
        self.value += n

    def dec(self, n: float = 1.0) -> None:
        self.value -= n


#: Held while a histogram's pending observations are folded in, and while a reader (a scrape thread) copies a
#: histogram's values: a reader never sees an observation both pending and counted, or neither.
_FOLDING = threading.Lock()


class HistogramChild:
    """``counts[i]``: observations in bucket ``i`` alone (``le=BUCKETS[i]``; the last is ``+Inf``), not cumulative.

    ``observe`` counts at once. The access log's end hook (its hottest caller) appends to ``pending`` instead, and
    its flush counts the batch (``fold_pending``): a sort and one ``bisect`` per bucket bound, in C, instead of one
    ``bisect`` and two additions per request. ``values`` includes what is pending, so no reader sees the difference.
    """

    __slots__ = ("counts", "pending", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0
        self.pending: list[float] = []

    def observe(self, seconds: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (Prometheus ``le`` is inclusive).
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds

    def fold(self) -> None:
        """Count the pending observations. Those appended meanwhile (by another thread) stay pending: the list is
        never replaced, only its counted head is removed."""
        with _FOLDING:
            pending = self.pending
            batch = pending[:]
            del pending[: len(batch)]
            self.counts[:], self.sum = _counted(self.counts, batch), self.sum + sum(batch)

    def values(self) -> tuple[list[int], float]:
        """(counts, sum) now, the pending observations included; safe from any thread."""
        with _FOLDING:
            counts, total, pending = list(self.counts), self.sum, list(self.pending)
        return (_counted(counts, pending), total + sum(pending)) if pending else (counts, total)

    def clear(self) -> None:
        with _FOLDING:
            self.counts[:] = [0] * len(self.counts)
            self.sum = 0.0
            self.pending.clear()

    @property
    def count(self) -> int:
        return sum(self.values()[0])


def fold_pending() -> None:
    """Fold every histogram's pending observations (``HistogramChild``): the access log's flush calls this, at most
    every ``FLUSH_DELAY``, so its cost is the number of histogram children, not of requests."""
    for metric in REGISTRY:
        if isinstance(metric, Histogram):
            for child in list(metric.children.values()):
                if child.pending:
                    child.fold()


def _counted(counts: list[int], observations: list[float]) -> list[int]:
    """``counts`` plus ``observations`` (sorted here): each bucket gets the observations up to its bound that the
    bucket below did not take (bisect_right: ``le`` is inclusive)."""
    if not observations:
        return counts
    observations.sort()
    out, below = list(counts), 0
    for i, bound in enumerate(BUCKETS):
        upto = bisect_right(observations, bound, below)
        out[i] += upto - below
        below = upto
    out[-1] += len(observations) - below
    return out


Child = CounterChild | GaugeChild | HistogramChild
C = TypeVar("C", CounterChild, GaugeChild, HistogramChild)


class Metric(Generic[C]):
    """One metric family: its name, help, label names (and, where closed, the allowed values) and its children."""

    kind: ClassVar[MetricKind]
    _child: Callable[[], C]

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...] = (),
        *,
        allowed: Mapping[str, tuple[str, ...]] | None = None,
        gauge_mode: GaugeMode = "livesum",
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.allowed = {key: frozenset(values) for key, values in (allowed or {}).items()}
        self.gauge_mode: GaugeMode = gauge_mode
        self.children: dict[tuple[str, ...], C] = {}
        if not labelnames:
            self.children[()] = self._child()

    def labels(self, **labels: str) -> C:
        """The child for these label values, created once; call at construction time and keep it."""
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {sorted(self.labelnames)}, got {sorted(labels)}")
        for label, value in labels.items():
            if not isinstance(value, str):
                raise TypeError(f"{self.name}: label {label} must be a str, got {type(value).__name__}")
            closed = self.allowed.get(label)
            if closed is not None and value not in closed:
                raise ValueError(f"{self.name}: {label}={value!r} is not one of {sorted(closed)}")
        key = tuple(labels[name] for name in self.labelnames)
        child = self.children.get(key)
        if child is None:
            child = self.children[key] = self._child()
        return child

    def _only(self) -> C:
        if self.labelnames:
            raise ValueError(f"{self.name} has labels {list(self.labelnames)}: use .labels(...)")
        return self.children[()]


class Counter(Metric[CounterChild]):
    kind = "counter"
    _child = CounterChild

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...] = (), **kw: Any) -> None:
        if not name.endswith("_total"):
            raise ValueError(f"counter {name!r}: counter names end in _total")
        super().__init__(name, documentation, labelnames, **kw)

    def inc(self, n: float = 1.0) -> None:
        self._only().inc(n)


class Gauge(Metric[GaugeChild]):
    kind = "gauge"
    _child = GaugeChild
    #: When set, the gauge's value is this function's answer at collection time (e.g. a live count).
    function: Callable[[], float] | None = None

    def set_function(self, function: Callable[[], float]) -> None:
        self.function = function

    def inc(self, n: float = 1.0) -> None:
        self._only().inc(n)

    def dec(self, n: float = 1.0) -> None:
        self._only().dec(n)

    def set(self, value: float) -> None:
        self._only().set(value)


class Histogram(Metric[HistogramChild]):
    kind = "histogram"
    _child = HistogramChild

    def observe(self, seconds: float) -> None:
        self._only().observe(seconds)


AnyMetric = Counter | Gauge | Histogram

#: Every metric bff exports, in exposition order.
REGISTRY: list[AnyMetric] = []


def counter(name: str, documentation: str, labelnames: tuple[str, ...] = (), **allowed: tuple[str, ...]) -> Counter:
    metric = Counter(name, documentation, labelnames, allowed=allowed)
    REGISTRY.append(metric)
    return metric


def histogram(name: str, documentation: str, labelnames: tuple[str, ...] = (), **allowed: tuple[str, ...]) -> Histogram:
    metric = Histogram(name, documentation, labelnames, allowed=allowed)
    REGISTRY.append(metric)
    return metric


def gauge(name: str, documentation: str, labelnames: tuple[str, ...] = (), *, mode: GaugeMode = "livesum") -> Gauge:
    metric = Gauge(name, documentation, labelnames, gauge_mode=mode)
    REGISTRY.append(metric)
    return metric
