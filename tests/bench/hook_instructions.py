"""``python -m tests.bench.hook_instructions``: CPU instructions per request of the telemetry observers' hooks.

Timings of a few microseconds drown in this kind of VM's noise; instruction counts do not. Each observer set runs
one request's hooks (``start``, ``upstream``, ``end``) in a loop under ``valgrind --tool=callgrind``, twice (LOW and
HIGH iterations); the difference over HIGH - LOW is the count per request, start-up cancelled out. The access log
formats each line at the request's end, as in the server, and writes none: its flush folds the histograms' pending
observations and joins the lines (the paired benchmark shows the write costs nothing it can see).
Needs ``valgrind``; prints one row per set, each including the sets above it;
the last row is the same work as the one above it, by the fused observer the server declares.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable

from bff.telemetry.access_log import AccessLog
from bff.telemetry.builtin import BuiltinTelemetry
from bff.telemetry.exchange import BaseObserver, Observer, Observers
from bff.telemetry.http_metrics import HttpMetrics
from bff.telemetry.metrics import fold_pending
from bff.telemetry.request_ids import RequestIds
from tests.bench.callgrind import per_request

LOW, HIGH = 1000, 3000
HEADERS = [
    (b"host", b"127.0.0.1:8080"),
    (b"x-csrf", b"1"),
    (b"cookie", b"__Host-bff=" + b"x" * 43),
    (b"accept", b"*/*"),
]
SESSION_KEY = "bff:s:AbCdEfGhIjKlMnOpQrStUvWxYz0123456789_-abcd"


class _NoHooks(BaseObserver):
    pass


def _log() -> AccessLog:
    log = AccessLog(json=True, stream=io.StringIO())
    log._scheduled = True  # never a timer: there is no event loop here

    def flush() -> None:  # folds and joins, writes none
        fold_pending()
        log.render()

    log.flush = flush  # type: ignore[method-assign]
    return log


SETS: dict[str, Callable[[], list[Observer]]] = {
    "none": list,
    "seam": lambda: [_NoHooks()],
    "+ request ids": lambda: [RequestIds()],
    "+ metrics": lambda: [RequestIds(), HttpMetrics()],
    "+ JSON access log": lambda: [RequestIds(), HttpMetrics(), _log()],
    "fused (as served)": lambda: [BuiltinTelemetry(_log())],
}


def _loop(name: str, count: int) -> None:
    observers = Observers(SETS[name]())
    for _ in range(count):
        scope = {"type": "http", "method": "GET", "path": "/api/items", "raw_path": b"/api/items", "headers": HEADERS}
        if not observers:
            continue
        ex = observers.exchange(scope, "/api")
        ex.server_address, ex.upstream_status, ex.upstream_duration, ex.upstream_time = "127.0.0.1:9", 200, 1e-3, 1e-3
        observers.upstream(ex)
        ex.status, ex.bytes_out, ex.session_key = 200, 316, SESSION_KEY
        observers.end(ex)


def main(argv: list[str]) -> int:
    per_request(argv, "tests.bench.hook_instructions", _loop, list(SETS), LOW, HIGH)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
