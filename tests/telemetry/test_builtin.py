"""The fused built-in observer: declared when metrics and the access log are both on, it does what the three
separate ones do (a hostile request id replaced, the metrics, the access line) with one clock read at the end."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest

from bff.app import create_observers
from bff.config import RouteSettings
from bff.telemetry import metrics
from bff.telemetry.access_log import AccessLog
from bff.telemetry.builtin import BuiltinTelemetry
from bff.telemetry.exchange import Observers
from bff.telemetry.http_metrics import HttpMetrics
from bff.telemetry.metrics import sample_value
from bff.telemetry.request_ids import RAW_HEADER, RequestIds
from bff.types import Receive, Scope, Send
from tests.proxy.conftest import StubBearer, run_proxy
from tests.support.configs import base_document, make_config
from tests.support.servers import serve


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


def test_the_fused_observer_is_called_directly_and_a_failing_hook_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    fused = BuiltinTelemetry(AccessLog(json=True, stream=io.StringIO()))
    observers = Observers([fused])
    # No loop: it guards itself.
    assert (observers.exchange, observers.upstream, observers.end) == (fused.exchange, fused.upstream, fused.end)
    broken = {"type": "http", "method": "GET", "path": "/api/x", "raw_path": b"/api/x", "headers": None}
    scope = {"type": "http", "method": "GET", "path": "/api/x", "raw_path": b"/api/x", "headers": []}
    with caplog.at_level(logging.ERROR):
        assert observers.exchange(broken, "/api").request_id is None  # the request goes on without an id
        ex = observers.exchange(scope, "/api")
        ex.upstream_status, ex.upstream_duration = 502, "not a number"  # type: ignore[assignment]  # a broken hook
        observers.upstream(ex)
        ex.bytes_in = "not a number"  # type: ignore[assignment]
        observers.end(ex)
    failures = [r.getMessage() for r in caplog.records if r.exc_info]
    assert failures == [
        "the built-in telemetry hook failed at the request start",
        "the metrics hook failed at an upstream answer",
        "the access log failed at the request end",
    ]
    assert Observers([fused, RequestIds()]).end != fused.end  # with another observer: the seam's loop


def client(status: str) -> float | None:
    labels = {"server_address": "up:1", "http_request_method": "GET", "http_response_status_code": status}
    return sample_value("http_client_request_duration_seconds_count", {**labels, "bff_route": "/api"})


@pytest.mark.parametrize("json_lines", [True, False], ids=["json", "text"])
@pytest.mark.parametrize("answers", [[200], [401, 200], [401, 401, 200], [401], [503], [None], [401, None]])
def test_every_upstream_call_is_observed_once(answers: list[int | None], json_lines: bool) -> None:
    """An answer below 400 is observed at the end, with the line (JSON or text); any other at once (a replay
    follows it)."""
    stream = io.StringIO()
    observers = Observers([BuiltinTelemetry(AccessLog(json=json_lines, stream=stream))])
    scope = {"type": "http", "method": "GET", "path": "/api/x", "raw_path": b"/api/x", "headers": []}
    ex = observers.exchange(scope, "/api")
    ex.server_address = "up:1"
    for answer in answers:
        ex.upstream_status, ex.upstream_duration = answer, 0.002
        ex.upstream_error = "timeout" if answer is None else None
        observers.upstream(ex)
    ex.status = answers[-1] or 504
    observers.end(ex)
    observers.flush()
    for status in {a for a in answers if a is not None}:
        assert client(str(status)) == answers.count(status), status
    timeouts = sample_value("bff_upstream_errors_total", {"bff_route": "/api", "kind": "timeout"})
    assert (timeouts or 0) == answers.count(None)
    fives = sample_value("bff_upstream_errors_total", {"bff_route": "/api", "kind": "status_5xx"})
    assert (fives or 0) == answers.count(503)
    server = {"http_request_method": "GET", "http_route": "/api", "http_response_status_code": str(ex.status)}
    assert sample_value("http_server_request_duration_seconds_count", server) == 1


async def stale_then_fresh(scope: Scope, receive: Receive, send: Send) -> None:
    """401 ``invalid_token`` to any token but ``fresh``; 200 to ``fresh``."""
    if scope["type"] != "http":
        return
    fresh = (b"authorization", b"Bearer fresh") in scope["headers"]
    headers = [(b"content-length", b"2")]
    if not fresh:
        headers.append((b"www-authenticate", b'Bearer error="invalid_token"'))
    await send({"type": "http.response.start", "status": 200 if fresh else 401, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok" if fresh else b"no"})


def test_a_refreshed_and_replayed_request_counts_both_upstream_calls_through_a_real_proxy() -> None:
    # The fused observer counts an answer below 400 at the end: it relies on the proxy replaying only after a 401.
    stream = io.StringIO()
    observers = Observers([BuiltinTelemetry(AccessLog(json=True, stream=stream))])
    with serve(stale_then_fresh, lifespan="off") as upstream:
        routes = [RouteSettings(path="/api", upstream=upstream)]
        with run_proxy(routes, StubBearer(), observers=observers) as url:
            response = httpx.get(f"{url}/api/items", headers={"X-CSRF": "1"})
    assert (response.status_code, response.text) == (200, "ok")
    observers.flush()
    address = upstream.removeprefix("http://")
    for status in ("401", "200"):
        labels = {"server_address": address, "http_request_method": "GET", "http_response_status_code": status}
        assert sample_value("http_client_request_duration_seconds_count", {**labels, "bff_route": "/api"}) == 1
    server = {"http_request_method": "GET", "http_route": "/api", "http_response_status_code": "200"}
    assert sample_value("http_server_request_duration_seconds_count", server) == 1
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["bff.upstream.status_code"] == 200
