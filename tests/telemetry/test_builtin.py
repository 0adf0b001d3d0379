"""The fused built-in observer: declared when metrics and the access log are both on, it does what the three
separate ones do (a hostile request id replaced, the metrics, the access line) with one clock read at the end."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from bff.app import create_observers
from bff.telemetry import metrics
from bff.telemetry.access_log import AccessLog
from bff.telemetry.builtin import BuiltinTelemetry
from bff.telemetry.exchange import Exchange, Observers
from bff.telemetry.http_metrics import HttpMetrics
from bff.telemetry.metrics import sample_value
from bff.telemetry.request_ids import RAW_HEADER, RequestIds
from tests.support.configs import base_document, make_config


@pytest.fixture(autouse=True)
def _zeroed() -> Iterator[None]:
    metrics.reset_for_tests()
    yield
    metrics.reset_for_tests()


def config(*, metrics_on: bool, access_log: bool) -> list[object]:
    doc = base_document()
    doc["logging"] = {"access_log": access_log, "format": "json"}
    if metrics_on:
        doc["metrics"] = {"listen": "127.0.0.1:9464"}
    return list(create_observers(make_config(doc)))


def test_fused_only_when_metrics_and_the_access_log_are_both_on() -> None:
    (fused,) = config(metrics_on=True, access_log=True)
    assert isinstance(fused, BuiltinTelemetry)
    assert RAW_HEADER in Observers([fused]).owned_headers
    assert [type(o) for o in config(metrics_on=True, access_log=False)] == [RequestIds, HttpMetrics]
    assert [type(o) for o in config(metrics_on=False, access_log=True)] == [RequestIds, AccessLog]
    assert config(metrics_on=False, access_log=False) == []


def test_one_request_through_the_fused_hooks() -> None:
    stream = io.StringIO()
    observers = Observers([BuiltinTelemetry(AccessLog(json=True, stream=stream))])
    hostile = [(RAW_HEADER, b"evil\r\nset-cookie: x")]
    scope = {"type": "http", "method": "GET", "path": "/api/x", "raw_path": b"/api/x", "headers": hostile}
    ex = observers.exchange(scope, "/api")
    assert ex.request_id is not None
    assert b"evil" not in ex.request_id.encode()
    assert ex.response_headers == [(RAW_HEADER, ex.request_id.encode("ascii"))]
    ex.server_address, ex.upstream_status, ex.upstream_duration = "up:1", 503, 0.002
    observers.upstream(ex)
    ex.status = 503
    observers.end(ex)
    observers.flush()
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["request_id"] == ex.request_id
    assert record["http.response.status_code"] == 503
    labels = {"http_request_method": "GET", "http_route": "/api", "http_response_status_code": "503"}
    assert sample_value("http_server_request_duration_seconds_count", labels) == 1
    seconds = sample_value("http_server_request_duration_seconds_sum", labels)
    assert seconds is not None
    assert 0 <= seconds * 1000 - record["duration_ms"] < 0.001
    assert sample_value("bff_upstream_errors_total", {"bff_route": "/api", "kind": "status_5xx"}) == 1


class _Failing(AccessLog):
    def record(self, ex: Exchange, now: float) -> None:
        raise RuntimeError("boom")


def test_the_fused_observer_is_called_directly_and_a_failing_hook_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    fused = BuiltinTelemetry(_Failing(json=True, stream=io.StringIO()))
    observers = Observers([fused])
    assert (observers.upstream, observers.end) == (fused.upstream, fused.end)  # no loop: it guards itself
    scope = {"type": "http", "method": "GET", "path": "/api/x", "raw_path": b"/api/x", "headers": []}
    ex = observers.exchange(scope, "/api")
    ex.upstream_status, ex.upstream_duration = 200, "not a number"  # type: ignore[assignment]  # a broken hook
    with caplog.at_level(logging.ERROR):
        observers.upstream(ex)
        observers.end(ex)
    failures = [r.getMessage() for r in caplog.records if r.exc_info]
    assert failures == [
        "the metrics hook failed at an upstream answer",
        "the built-in telemetry hook failed at the request end",
    ]
    assert Observers([fused, RequestIds()]).end != fused.end  # with another observer: the seam's loop
