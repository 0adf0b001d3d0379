"""The metrics observer on exchanges: the right child counts, invented methods stay one label (and one entry), a
browser gone before any answer is 499, upstream failures and 5xx count as errors by kind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bff.telemetry import metrics
from bff.telemetry.exchange import Exchange
from bff.telemetry.http_metrics import HttpMetrics
from bff.telemetry.metrics import sample_value


@pytest.fixture(autouse=True)
def _zeroed() -> Iterator[None]:
    metrics.reset_for_tests()
    yield
    metrics.reset_for_tests()


def exchange(method: str = "GET", status: int = 200) -> Exchange:
    ex = Exchange({"method": method, "path": "/api/x", "headers": []}, "/api", 0.0)
    ex.status, ex.server_address = status, "up.example:443"
    return ex


def server(method: str, status: str) -> float | None:
    labels = {"http_request_method": method, "http_route": "/api", "http_response_status_code": status}
    return sample_value("http_server_request_duration_seconds_count", labels)


def test_requests_count_by_route_method_and_status() -> None:
    observer = HttpMetrics()
    for _ in range(3):
        observer.end(exchange())
    observer.end(exchange(status=401))
    assert server("GET", "200") == 3
    assert server("GET", "401") == 1


def test_invented_methods_are_one_label_and_one_entry() -> None:
    observer = HttpMetrics()
    for i in range(500):
        observer.end(exchange(method=f"X{i}"))
    assert server("_OTHER", "200") == 500
    assert len(observer._server) == 1


def test_a_browser_gone_before_any_answer_is_499() -> None:
    HttpMetrics().end(exchange(status=0))
    assert server("GET", "499") == 1


def test_upstream_answers_and_failures() -> None:
    observer = HttpMetrics()
    ok = exchange()
    ok.upstream_status, ok.upstream_duration = 200, 0.004
    observer.upstream(ok)
    bad = exchange()
    bad.upstream_status, bad.upstream_duration = 503, 0.002
    observer.upstream(bad)
    failed = exchange()
    failed.upstream_error = "connect_error"
    observer.upstream(failed)
    client = {"server_address": "up.example:443", "http_request_method": "GET", "bff_route": "/api"}
    name = "http_client_request_duration_seconds_bucket"
    assert sample_value(name, {**client, "http_response_status_code": "200", "le": "0.005"}) == 1
    assert sample_value(name, {**client, "http_response_status_code": "200", "le": "0.0025"}) == 0
    assert sample_value(name, {**client, "http_response_status_code": "503", "le": "+Inf"}) == 1
    errors = "bff_upstream_errors_total"
    assert sample_value(errors, {"bff_route": "/api", "kind": "status_5xx"}) == 1
    assert sample_value(errors, {"bff_route": "/api", "kind": "connect_error"}) == 1
