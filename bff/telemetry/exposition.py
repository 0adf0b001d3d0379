"""Prometheus ``/metrics`` for bff's metrics (``bff.telemetry.metrics``), in one process or summed over workers.

One process: the scrape reads the live values. ``bff serve --workers N``: the supervisor serves the listener and
creates a private directory; each worker writes a snapshot of its absolute values there (``{pid}.json``, replaced
atomically) once per ``FLUSH_INTERVAL`` and when it stops, and a scrape sums the snapshots. Counters and histograms
are summed over every file, so a worker that died keeps its last snapshot's counts (a new worker writes a file of
its own: nothing is counted twice); a worker killed outright loses at most its last interval. Gauges marked
``livesum`` (open connections) are summed over the workers still running only. A scrape may therefore lag the
traffic by up to ``FLUSH_INTERVAL``.

The text exposition is ``prometheus_client``'s own (``generate_latest``), served by its WSGI server on a thread of
its own, never on the public listener.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric as PromMetric
from prometheus_client.registry import Collector

from bff.telemetry import metrics
from bff.telemetry.metrics import BUCKETS, HistogramChild

#: How often a worker writes its snapshot (seconds); a scrape under ``--workers`` lags by at most this.
FLUSH_INTERVAL = 1.0
#: The environment variable naming the snapshot directory (set by ``bff serve`` for its workers).
METRICS_DIR_ENV = "BFF_METRICS_DIR"

#: name -> [(label values, value)] for counters and gauges, [(label values, [counts..., sum])] for histograms.
Snapshot = dict[str, list[tuple[list[str], Any]]]


def set_build_info() -> None:
    try:
        bff_version = version("bff")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
        bff_version = "unknown"
    metrics.BUILD_INFO.labels(version=bff_version, python=platform.python_version()).set(1)


def snapshot() -> Snapshot:
    """This process's values now (plain data, JSON-ready)."""
    out: Snapshot = {}
    for metric in metrics.REGISTRY:
        rows: list[tuple[list[str], Any]] = []
        if isinstance(metric, metrics.Gauge) and metric.function is not None:
            rows.append(([], float(metric.function())))
        else:
            children: list[tuple[tuple[str, ...], metrics.Child]] = list(metric.children.items())
            for key, child in children:
                if isinstance(child, HistogramChild):
                    counts, total = child.values()
                    rows.append((list(key), [*counts, total]))
                else:
                    rows.append((list(key), child.value))
        out[metric.name] = rows
    return out


def merge(snapshots: Iterable[tuple[Snapshot, bool]]) -> Snapshot:
    """The sum of several processes' snapshots (``(snapshot, alive)``): see the module docstring for gauges."""
    kinds = {m.name: m for m in metrics.REGISTRY}
    totals: dict[str, dict[tuple[str, ...], Any]] = {m.name: {} for m in metrics.REGISTRY}
    for snap, alive in snapshots:
        for name, rows in snap.items():
            metric = kinds.get(name)
            if metric is None:
                continue  # written by another bff version: unknown here
            is_gauge = isinstance(metric, metrics.Gauge)
            if is_gauge and metric.gauge_mode == "livesum" and not alive:
                continue
            table = totals[name]
            for labels, value in rows:
                key = tuple(labels)
                if isinstance(metric, metrics.Histogram):
                    previous = table.get(key)
                    table[key] = (
                        list(value) if previous is None else [a + b for a, b in zip(previous, value, strict=True)]
                    )
                elif is_gauge and metric.gauge_mode == "max":
                    table[key] = max(table.get(key, value), value)
                else:
                    table[key] = table.get(key, 0.0) + value
    return {name: [(list(k), v) for k, v in table.items()] for name, table in totals.items()}


def families(snap: Snapshot) -> Iterator[PromMetric]:
    """``prometheus_client`` metric families for a snapshot, in catalogue order."""
    for metric in metrics.REGISTRY:
        rows = snap.get(metric.name, [])
        labelnames = list(metric.labelnames)
        family: CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily
        if isinstance(metric, metrics.Counter):
            family = CounterMetricFamily(metric.name.removesuffix("_total"), metric.documentation, labels=labelnames)
            for labels, value in rows:
                family.add_metric(labels, value)
        elif isinstance(metric, metrics.Gauge):
            family = GaugeMetricFamily(metric.name, metric.documentation, labels=labelnames)
            for labels, value in rows:
                family.add_metric(labels, value)
        else:
            family = HistogramMetricFamily(metric.name, metric.documentation, labels=labelnames)
            for labels, value in rows:
                counts, total = value[:-1], value[-1]
                cumulative, buckets = 0, []
                for bound, count in zip((*BUCKETS, float("inf")), counts, strict=True):
                    cumulative += count
                    buckets.append(("+Inf" if bound == float("inf") else repr(bound), float(cumulative)))
                family.add_metric(labels, buckets, total)
        yield family


class LiveCollector(Collector):
    """This process's values (one process serving everything)."""

    def collect(self) -> Iterator[PromMetric]:
        return families(snapshot())


class DirectoryCollector(Collector):
    """The sum of the workers' snapshot files in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def collect(self) -> Iterator[PromMetric]:
        return families(merge(read_snapshots(self.directory)))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a pid reused by another user's process
        return False
    return True


def read_snapshots(directory: Path) -> Iterator[tuple[Snapshot, bool]]:
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            pid = int(path.stem)
        except (OSError, ValueError):
            continue  # removed between glob and read, or not ours
        yield data["metrics"], (not data.get("stopped", False)) and _alive(pid)


def write_snapshot(directory: Path, *, stopped: bool = False) -> None:
    """This worker's snapshot, replacing its previous one atomically (a scrape never reads half a file)."""
    target = directory / f"{os.getpid()}.json"
    temporary = directory / f".{os.getpid()}.tmp"
    temporary.write_text(json.dumps({"metrics": snapshot(), "stopped": stopped}), encoding="utf-8")
    os.replace(temporary, target)


@contextlib.contextmanager
def metrics_listener(host: str, port: int, *, workers: int) -> Iterator[dict[str, str]]:
    """Serve ``/metrics`` on ``host:port`` for this process (``workers == 1``) or for its workers (a private
    snapshot directory, named in the environment it yields for them); the directory is removed at the end."""
    set_build_info()
    registry = CollectorRegistry(auto_describe=False)
    directory: Path | None = None
    env: dict[str, str] = {}
    if workers > 1:
        directory = Path(tempfile.mkdtemp(prefix="bff-metrics-"))
        registry.register(DirectoryCollector(directory))
        env[METRICS_DIR_ENV] = str(directory)
    else:
        registry.register(LiveCollector())
    server, thread = start_http_server(port, host, registry=registry)
    try:
        yield env
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
