"""The access line: valid one-line JSON for any bytes a hostile path can hold, never the query, the fields right;
text lines stay one line; lines are buffered, formatted and written together."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import time
from unittest import mock

from hypothesis import given
from hypothesis import strategies as st

from bff.telemetry import access_log
from bff.telemetry.access_log import FLUSH_DELAY, FLUSH_LINES, AccessLog
from bff.telemetry.exchange import Exchange
from bff.telemetry.http_metrics import HttpMetrics
from bff.telemetry.metrics import STANDARD_METHODS


def exchange(path: bytes = b"/api/items/7", method: str = "GET", route: str = "/api") -> Exchange:
    ex = Exchange({"method": method, "path": "/ignored", "raw_path": path, "headers": []}, route, 0.0)
    return ex


def finished(ex: Exchange) -> Exchange:
    ex.status, ex.upstream_status, ex.upstream_time = 200, 200, 0.0125
    ex.bytes_in, ex.bytes_out = 3, 1234
    ex.request_id = "abc-1"
    ex.session_key = "bff:s:AbCdEfGhIjKlMnOpQrStUvWxYz0123456789_-abcd"
    return ex


def lines(log: AccessLog, stream: io.StringIO) -> list[str]:
    log.flush()
    return stream.getvalue().splitlines()


def test_the_json_fields() -> None:
    stream = io.StringIO()
    log = AccessLog(json=True, stream=stream)
    log.end(finished(exchange()))
    (line,) = lines(log, stream)
    record = json.loads(line)
    assert record["logger"] == "bff.access"
    assert record["http.route"] == "/api"
    assert record["http.request.method"] == "GET"
    assert record["url.path"] == "/api/items/7"
    assert record["http.response.status_code"] == 200
    assert record["bff.upstream.status_code"] == 200
    # Whole microseconds: integers are cheaper to render than fractional milliseconds, and exact.
    assert record["bff.upstream.duration_ms"] == 12.5
    assert isinstance(record["duration_ms"], float)
    assert record["duration_ms"] >= 0
    assert (record["http.request.body.size"], record["http.response.body.size"]) == (3, 1234)
    assert record["request_id"] == "abc-1"
    assert record["bff.session"] == "AbCdEfGhIjKl"
    assert (record["bff.error"], record["trace_id"], record["span_id"]) == (None, None, None)
    assert record["timestamp"].endswith("Z")


@given(
    st.integers(min_value=0, max_value=10**10),
    st.integers(min_value=0, max_value=10**10),
    st.integers(min_value=0, max_value=2**40),
    st.integers(min_value=0, max_value=2**40),
)
def test_durations_and_sizes_render_as_their_decimal_text(us: int, up_us: int, size_in: int, size_out: int) -> None:
    # Below 1000 the integer parts come from a table, above they are formatted: both must give the same digits.
    stream = io.StringIO()
    log = AccessLog(json=True, stream=stream)
    ex = finished(exchange())
    ex.started, ex.upstream_time, ex.bytes_in, ex.bytes_out = 0.0, up_us / 1e6, size_in, size_out
    with mock.patch.object(access_log, "perf_counter", return_value=us / 1e6):  # the request ends at us µs
        log.end(ex)
    (line,) = lines(log, stream)
    whole, upstream = int(us / 1e6 * 1e6), int(up_us / 1e6 * 1e6)
    assert f'"duration_ms":{whole // 1000}.{whole % 1000:03d},' in line
    assert f'"bff.upstream.duration_ms":{upstream // 1000}.{upstream % 1000:03d},' in line
    assert f'"http.request.body.size":{size_in},"http.response.body.size":{size_out},' in line


def test_a_refusal_has_no_upstream_fields() -> None:
    stream = io.StringIO()
    log = AccessLog(json=True, stream=stream)
    ex = exchange()
    ex.status, ex.error = 401, "csrf"
    log.end(ex)
    record = json.loads(lines(log, stream)[0])
    assert (record["bff.upstream.status_code"], record["bff.upstream.duration_ms"]) == (None, None)
    assert (record["bff.error"], record["bff.session"]) == ("csrf", None)


@given(path=st.binary(min_size=1, max_size=300), method=st.text(max_size=20), route=st.text(max_size=30))
def test_any_path_method_or_route_gives_one_line_of_valid_json(path: bytes, method: str, route: str) -> None:
    stream = io.StringIO()
    log = AccessLog(json=True, stream=stream)
    log.end(finished(exchange(path, method, route)))
    log.flush()
    text = stream.getvalue()
    assert text.endswith("\n")
    assert text.count("\n") == 1
    assert text.isascii()
    record = json.loads(text)
    assert record["url.path"] == path.decode("utf-8", "backslashreplace")
    assert (record["http.request.method"], record["http.route"]) == (method, route)
    assert set(record) >= {"url.path", "request_id", "http.route"}


@given(path=st.binary(min_size=1, max_size=300), method=st.text(max_size=20), json_lines=st.booleans())
def test_with_metrics_any_path_or_method_gives_one_line_and_only_bounded_labels(
    path: bytes, method: str, json_lines: bool
) -> None:
    """The fused observer's end (the line and both histograms from one cache entry): one valid line, and a method a
    client invents is labelled ``_OTHER``, never itself."""
    stream = io.StringIO()
    log = AccessLog(json=json_lines, stream=stream)
    metrics = HttpMetrics()
    log.observe_durations(metrics)
    ex = finished(exchange(path, method))
    ex.server_address = "up:1"
    log.end(ex)
    log.flush()
    text = stream.getvalue()
    assert text.count("\n") == 1
    assert text.endswith("\n")
    assert text.isascii()
    if json_lines:
        assert json.loads(text)["url.path"] == path.decode("utf-8", "backslashreplace")
    label = method if method in STANDARD_METHODS else "_OTHER"
    assert {key[1] for key in metrics._server} == {label}
    assert {key[1] for key in metrics._client} == {label}


@given(path=st.binary(min_size=1, max_size=300))
def test_any_path_gives_one_text_line(path: bytes) -> None:
    stream = io.StringIO()
    log = AccessLog(json=False, stream=stream)
    log.end(finished(exchange(path)))
    log.flush()
    text = stream.getvalue()
    assert text.count("\n") == 1
    assert text.endswith("\n")
    assert text.isascii()


def test_text_line_fields() -> None:
    stream = io.StringIO()
    log = AccessLog(json=False, stream=stream)
    log.end(finished(exchange()))
    (line,) = lines(log, stream)
    assert ' INFO bff.access "GET" "/api/items/7" 200 route="/api" upstream=200 ' in line
    assert "request_id=abc-1" in line
    assert "session=AbCdEfGhIjKl" in line


async def test_lines_are_written_together_after_the_delay() -> None:
    class Counting(io.StringIO):
        writes = 0

        def write(self, s: str) -> int:
            Counting.writes += 1
            return super().write(s)

    stream = Counting()
    log = AccessLog(json=True, stream=stream)
    for _ in range(5):
        log.end(finished(exchange()))
    assert stream.getvalue() == ""
    await asyncio.sleep(0)
    assert stream.getvalue() == ""  # not per loop turn: per FLUSH_DELAY
    await asyncio.sleep(FLUSH_DELAY * 2)
    assert Counting.writes == 1
    assert len(stream.getvalue().splitlines()) == 5


async def test_a_burst_is_written_at_the_size_bound() -> None:
    stream = io.StringIO()
    log = AccessLog(json=True, stream=stream)
    for _ in range(FLUSH_LINES):
        log.end(finished(exchange()))
    assert len(stream.getvalue().splitlines()) == FLUSH_LINES


def test_lines_sharing_a_route_keep_their_own_status_error_session_and_trace() -> None:
    stream = io.StringIO()
    log = AccessLog(json=True, stream=stream)
    first = finished(exchange())
    second = finished(exchange())
    second.status, second.upstream_status, second.error = 502, None, "upstream_error"
    second.upstream_error = "connect_error"
    second.session_key = None
    third = finished(exchange(method="POST"))
    third.session_key = "bff:s:ZyXwVuTsRqPoNm"
    third.trace_id, third.span_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    for ex in (first, second, third, first):
        log.end(ex)
    records = [json.loads(line) for line in lines(log, stream)]
    got = [
        (
            r["http.request.method"],
            r["http.response.status_code"],
            r["bff.upstream.status_code"],
            r["bff.error"],
            r["bff.session"],
            r["trace_id"],
            r["span_id"],
        )
        for r in records
    ]
    assert got == [
        ("GET", 200, 200, None, "AbCdEfGhIjKl", None, None),
        ("GET", 502, None, "upstream_error", None, None, None),
        ("POST", 200, 200, None, "ZyXwVuTsRqPo", "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"),
        ("GET", 200, 200, None, "AbCdEfGhIjKl", None, None),
    ]
    assert records[1]["bff.upstream.duration_ms"] == 12.5  # a failed upstream call still took its time


def test_methods_a_client_invents_do_not_grow_memory_without_bound() -> None:
    stream = io.StringIO()
    log = AccessLog(json=True, stream=stream)
    for i in range(access_log.MAX_FRAGMENTS + 50):
        log.end(finished(exchange(method=f"M{i}")))
    records = [json.loads(line) for line in lines(log, stream)]
    assert records[-1]["http.request.method"] == f"M{access_log.MAX_FRAGMENTS + 49}"
    assert len(log._fragments) == access_log.MAX_FRAGMENTS


def test_the_timestamp_is_the_wall_clock_time_of_the_request_end() -> None:
    stream = io.StringIO()
    log = AccessLog(json=True, stream=stream)
    before = time.time()
    log.end(finished(exchange()))
    after = time.time()
    stamp = json.loads(lines(log, stream)[0])["timestamp"]
    parsed = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.UTC).timestamp()
    assert before - 0.001 <= parsed <= after


def test_a_repeated_hostile_path_stays_valid_json_and_the_fragment_cache_is_bounded() -> None:
    stream = io.StringIO()
    log = AccessLog(json=True, stream=stream)
    hostile = b'/api/"\n\xff\x00</script>'
    paths = (hostile, hostile, *(b"/api/items/%d" % i for i in range(access_log.MAX_FRAGMENTS + 10)), hostile)
    for path in paths:
        log.end(finished(exchange(path)))
    records = [json.loads(line) for line in lines(log, stream)]
    assert len(records) == access_log.MAX_FRAGMENTS + 13
    assert [r["url.path"] for r in records[:2]] == [hostile.decode("utf-8", "backslashreplace")] * 2
    assert records[-1]["url.path"] == hostile.decode("utf-8", "backslashreplace")
    assert records[-2]["url.path"] == f"/api/items/{access_log.MAX_FRAGMENTS + 9}"
    assert len(log._fragments) == access_log.MAX_FRAGMENTS
    log._fragments.clear()
    long = b"/api/" + b"x" * access_log.MAX_CACHED_PATH
    log.end(finished(exchange(long)))
    assert json.loads(lines(log, stream)[-1])["url.path"] == long.decode()
    assert log._fragments == {}  # a long path is rendered, never kept
