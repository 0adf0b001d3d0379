"""The Prometheus exposition: the text prometheus-client renders from bff's values, and the sum over workers'
snapshot files (counters of a dead worker kept once, open connections only from the live ones)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bff.telemetry import exposition, metrics
from bff.telemetry.exposition import DirectoryCollector, LiveCollector, merge, snapshot, write_snapshot


@pytest.fixture(autouse=True)
def _zeroed() -> Iterator[None]:
    metrics.reset_for_tests()
    function = metrics.CONNECTIONS_OPEN.function
    metrics.CONNECTIONS_OPEN.function = None
    yield
    metrics.CONNECTIONS_OPEN.function = function
    metrics.reset_for_tests()


def scrape(collector: LiveCollector | DirectoryCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


def labels(**kw: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kw.items()))


def test_the_text_format_holds_every_kind() -> None:
    metrics.LOGIN.labels(outcome="ok").inc(3)
    metrics.HTTP_SERVER_DURATION.labels(
        http_request_method="GET", http_route="/api", http_response_status_code="200"
    ).observe(0.003)
    metrics.CONNECTIONS_OPEN.set_function(lambda: 7)
    exposition.set_build_info()
    values = scrape(LiveCollector())
    assert values["bff_login_total", labels(outcome="ok")] == 3
    route = {"http_request_method": "GET", "http_route": "/api", "http_response_status_code": "200"}
    assert values["http_server_request_duration_seconds_count", labels(**route)] == 1
    assert values["http_server_request_duration_seconds_bucket", labels(**route, le="0.0025")] == 0
    assert values["http_server_request_duration_seconds_bucket", labels(**route, le="0.005")] == 1
    assert values["http_server_request_duration_seconds_bucket", labels(**route, le="+Inf")] == 1
    assert values["http_server_request_duration_seconds_sum", labels(**route)] == pytest.approx(0.003)
    assert values["bff_connections_open", ()] == 7
    assert [v for (name, _), v in values.items() if name == "bff_build_info"] == [1]


def _other_process_snapshot(directory: Path, *, stopped: bool = False) -> int:
    """A snapshot written by a process that has exited since (a dead worker): its pid is not alive."""
    code = (
        "from pathlib import Path; from bff.telemetry import metrics, exposition;"
        "metrics.LOGIN.labels(outcome='ok').inc(5); metrics.CONNECTIONS_OPEN.set(4);"
        "metrics.TOKEN_REFRESH_DURATION.observe(0.2);"
        f"exposition.set_build_info(); exposition.write_snapshot(Path({str(directory)!r}), stopped={stopped})"
    )
    done = subprocess.run([sys.executable, "-c", code], check=True)
    assert done.returncode == 0
    (path,) = [p for p in directory.glob("*.json") if p.stem != str(os.getpid())]
    return int(path.stem)


def test_workers_are_summed_and_a_dead_workers_gauge_is_not(tmp_path: Path) -> None:
    _other_process_snapshot(tmp_path)
    metrics.LOGIN.labels(outcome="ok").inc(2)
    metrics.LOGIN.labels(outcome="error").inc()
    metrics.CONNECTIONS_OPEN.set(3)
    metrics.TOKEN_REFRESH_DURATION.observe(0.2)
    exposition.set_build_info()
    write_snapshot(tmp_path)
    write_snapshot(tmp_path)  # rewritten, not added: a worker's file holds its absolute values
    values = scrape(DirectoryCollector(tmp_path))
    assert values["bff_login_total", labels(outcome="ok")] == 7
    assert values["bff_login_total", labels(outcome="error")] == 1
    assert values["bff_connections_open", ()] == 3  # the dead worker's 4 connections are gone with it
    assert values["bff_token_refresh_duration_seconds_count", ()] == 2
    assert values["bff_token_refresh_duration_seconds_bucket", labels(le="0.25")] == 2
    assert [v for (name, _), v in values.items() if name == "bff_build_info"] == [1]  # max, not the sum


def test_a_stopped_workers_gauge_is_not_summed_even_if_its_pid_lives_on(tmp_path: Path) -> None:
    metrics.CONNECTIONS_OPEN.set(3)
    metrics.LOGIN.labels(outcome="ok").inc()
    write_snapshot(tmp_path, stopped=True)
    merged = merge(exposition.read_snapshots(tmp_path))
    assert merged["bff_connections_open"] == []
    assert (["ok"], 1.0) in merged["bff_login_total"]


def test_a_snapshot_is_plain_data_and_a_foreign_file_is_ignored(tmp_path: Path) -> None:
    metrics.LOGIN.labels(outcome="ok").inc()
    (tmp_path / "not-a-pid.json").write_text("{}")
    (tmp_path / "123.json").write_text("{half")
    write_snapshot(tmp_path)
    assert not list(tmp_path.glob(".*.tmp"))
    assert (["ok"], 1.0) in snapshot()["bff_login_total"]
    assert scrape(DirectoryCollector(tmp_path))["bff_login_total", labels(outcome="ok")] == 1
