"""The benchmark reads wrk's report (``tests.bench.wrk``); ``make bench-smoke`` runs the rest for real."""

from __future__ import annotations

import pytest

from tests.bench.wrk import parse_wrk

REPORT = """Running 10s test @ http://127.0.0.1:8080/api/orders/7
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.61ms    1.02ms  30.11ms   91.20%
    Req/Sec     5.71k   312.45     6.10k    80.00%
  Latency Distribution
     50%    5.50ms
     75%    5.90ms
     90%    6.41ms
     99%    9.12ms
  56843 requests in 10.00s, 25.33MB read
  Non-2xx or 3xx responses: 3
  Socket errors: connect 0, read 1, write 0, timeout 2
Requests/sec:   5683.95
Transfer/sec:      2.53MB
"""


def test_a_report_is_read() -> None:
    result = parse_wrk(REPORT)
    assert result.requests == 56843
    assert result.seconds == 10.0
    assert result.rps == pytest.approx(5684.3)
    assert result.p50 == pytest.approx(0.0055)
    assert result.p99 == pytest.approx(0.00912)
    assert (result.non_2xx, result.socket_errors, result.failures) == (3, 3, 6)
    assert result.cpu_us_per_request is None


def test_microseconds_and_seconds_are_read_too() -> None:
    report = REPORT.replace("5.50ms", "812.00us").replace("9.12ms", "1.02s")
    result = parse_wrk(report)
    assert result.p50 == pytest.approx(0.000812)
    assert result.p99 == pytest.approx(1.02)


def test_a_report_without_percentiles_is_refused() -> None:
    with pytest.raises(ValueError, match="unexpected wrk output"):
        parse_wrk(REPORT.replace("99%", "98%"))
