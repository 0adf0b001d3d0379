"""The metric primitives: bucket math, label checks, samples as the exposition names them, the catalogue."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bff.telemetry import metrics
from bff.telemetry.metrics import BUCKETS, Counter, CounterChild, GaugeChild, Histogram, HistogramChild, sample_value


@pytest.fixture(autouse=True)
def _zeroed() -> Iterator[None]:
    metrics.reset_for_tests()
    yield
    metrics.reset_for_tests()


def test_buckets_span_one_millisecond_to_thirty_seconds() -> None:
    assert BUCKETS[0] == 0.001
    assert BUCKETS[-1] == 30.0
    assert list(BUCKETS) == sorted(set(BUCKETS))


@pytest.mark.parametrize(
    ("seconds", "index"),
    [(0.0, 0), (0.001, 0), (0.0010001, 1), (0.0025, 1), (1.0, 9), (29.9, 13), (30.0, 13), (30.01, 14), (1e9, 14)],
)
def test_a_value_on_a_bound_falls_in_that_bucket(seconds: float, index: int) -> None:
    child = HistogramChild()
    child.observe(seconds)
    assert child.counts[index] == 1
    assert child.count == 1
    assert child.sum == seconds


_DURATIONS = st.floats(min_value=0, max_value=100, allow_nan=False) | st.sampled_from(BUCKETS)


@given(st.lists(_DURATIONS, max_size=80), st.integers(min_value=0, max_value=80))
def test_pending_observations_count_as_observed_ones_before_and_after_a_fold(values: list[float], cut: int) -> None:
    # The access log appends to ``pending`` and folds at its flush: no reader may see the difference.
    observed, head, deferred = HistogramChild(), HistogramChild(), HistogramChild()
    for value in values:
        observed.observe(value)
    for value in values[:cut]:
        head.observe(value)
    deferred.pending.extend(values[:cut])
    assert deferred.values()[0] == head.counts  # pending, not folded yet
    deferred.fold()
    deferred.pending.extend(values[cut:])
    assert deferred.values()[0] == observed.counts
    assert deferred.count == len(values)
    assert deferred.values()[1] == pytest.approx(observed.sum)
    deferred.fold()
    assert deferred.counts == observed.counts
    assert deferred.pending == []


def test_a_fold_keeps_what_is_appended_after_it_took_its_batch() -> None:
    # Another thread may append while a fold runs: the list is never replaced, only its counted head removed.
    child = HistogramChild()
    child.pending.extend([0.002, 0.2])
    pending = child.pending
    child.fold()
    pending.append(3.0)
    assert child.pending == [3.0]
    assert child.values()[0][BUCKETS.index(5.0)] == 1
    assert sum(child.counts) == 2


def test_samples_and_fold_pending_include_pending_observations() -> None:
    metric = metrics.HTTP_SERVER_DURATION
    child = metric.labels(http_request_method="GET", http_route="/t", http_response_status_code="200")
    child.pending.extend([0.004, 0.004, 40.0])
    labels = {"http_request_method": "GET", "http_route": "/t", "http_response_status_code": "200"}
    name = metric.name
    assert sample_value(f"{name}_bucket", {**labels, "le": "0.005"}) == 2.0
    assert sample_value(f"{name}_count", labels) == 3.0
    metrics.fold_pending()
    assert child.pending == []
    assert child.counts[BUCKETS.index(0.005)] == 2
    assert child.counts[-1] == 1
    assert sample_value(f"{name}_count", labels) == 3.0


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=50))
def test_cumulative_buckets_match_a_direct_count(values: list[float]) -> None:
    metric = Histogram("t_seconds", "test")
    for value in values:
        metric.observe(value)
    rendered = {
        labels["le"]: v for name, labels, v in metrics.samples(metric, metric.children) if name.endswith("_bucket")
    }
    for bound in BUCKETS:
        assert rendered[repr(bound)] == sum(1 for value in values if value <= bound)
    assert rendered["+Inf"] == len(values)


def test_counter_refuses_to_go_down_and_needs_a_total_name() -> None:
    with pytest.raises(ValueError, match="only goes up"):
        CounterChild().inc(-1)
    with pytest.raises(ValueError, match="_total"):
        Counter("bff_things", "no suffix")


def test_gauge_moves_both_ways() -> None:
    child = GaugeChild()
    child.inc()
    child.inc(2)
    child.dec()
    assert child.value == 2
    child.set(7)
    assert child.value == 7


def test_labels_are_exact_and_closed_sets_refuse_other_values() -> None:
    with pytest.raises(ValueError, match="expected labels"):
        metrics.TOKEN_REFRESH.labels(result="ok")
    with pytest.raises(ValueError, match="not one of"):
        metrics.TOKEN_REFRESH.labels(outcome="eyJhbGciOi.secret")
    with pytest.raises(ValueError, match=r"use \.labels"):
        metrics.TOKEN_REFRESH.inc()
    assert metrics.TOKEN_REFRESH.labels(outcome="ok") is metrics.TOKEN_REFRESH.labels(outcome="ok")


def test_unlabelled_metrics_are_used_directly_and_keep_their_kind() -> None:
    metrics.SESSIONS_CREATED.inc()
    metrics.TOKEN_REFRESH_DURATION.observe(0.2)
    metrics.CONNECTIONS_OPEN.inc()
    assert sample_value("bff_sessions_created_total") == 1
    assert sample_value("bff_token_refresh_duration_seconds_count") == 1
    assert sample_value("bff_token_refresh_duration_seconds_bucket", {"le": "0.25"}) == 1
    assert sample_value("bff_token_refresh_duration_seconds_bucket", {"le": "0.1"}) == 0
    assert sample_value("bff_connections_open") == 1


def test_sample_value_reads_labelled_children_and_says_none_for_unknown() -> None:
    child = metrics.LOGIN.labels(outcome="invalid_state")
    child.inc()
    child.inc(2)
    assert sample_value("bff_login_total", {"outcome": "invalid_state"}) == 3
    assert sample_value("bff_login_total", {"outcome": "nope"}) is None
    assert sample_value("bff_no_such_metric_total") is None


def test_the_catalogue_names_are_the_contract() -> None:
    names = {m.name for m in metrics.REGISTRY}
    assert {
        "http_server_request_duration_seconds",
        "http_client_request_duration_seconds",
        "bff_upstream_errors_total",
        "bff_token_refresh_total",
        "bff_token_refresh_duration_seconds",
        "bff_token_exchange_total",
        "bff_sessions_created_total",
        "bff_sessions_ended_total",
        "bff_login_total",
        "bff_store_operation_duration_seconds",
        "bff_store_errors_total",
        "bff_jwks_fetch_total",
        "bff_connections_open",
        "bff_build_info",
    } <= names
    assert metrics.HTTP_SERVER_DURATION.labelnames == ("http_request_method", "http_route", "http_response_status_code")
    assert metrics.HTTP_CLIENT_DURATION.labelnames == (
        "server_address",
        "http_request_method",
        "http_response_status_code",
        "bff_route",
    )


@pytest.mark.parametrize(
    ("method", "label"), [("GET", "GET"), ("PATCH", "PATCH"), ("PROPFIND", "_OTHER"), ("get", "_OTHER")]
)
def test_methods_outside_the_standard_set_are_other(method: str, label: str) -> None:
    assert metrics.method_label(method) == label
