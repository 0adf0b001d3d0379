"""bff's built-in observers fused into one: request ids, metrics and the access record, one call per hook point.

Declared by ``bff.app.create_observers`` when both metrics and the access log are on. Each hook does what the three
separate observers (``RequestIds``, ``HttpMetrics``, ``AccessLog``) would, in the same order, with one dispatch
through ``Observers`` instead of three and one clock read at the end shared by the duration metric and the access
line. User observers keep the generic seam (``bff.telemetry.exchange``).
"""

from __future__ import annotations

from time import perf_counter

from bff.telemetry.access_log import AccessLog
from bff.telemetry.exchange import Exchange
from bff.telemetry.http_metrics import HttpMetrics
from bff.telemetry.request_ids import RequestIdGenerator, RequestIds


class BuiltinTelemetry(RequestIds, HttpMetrics):
    """``start`` is the request id's, ``upstream`` the metrics'; ``end`` records the metrics and the access line."""

    def __init__(self, access_log: AccessLog, generate: RequestIdGenerator | None = None) -> None:
        RequestIds.__init__(self, generate)
        HttpMetrics.__init__(self)
        self._access_log = access_log
        self._log_record = access_log.record

    def end(self, exchange: Exchange) -> None:
        now = perf_counter()
        HttpMetrics.record(self, exchange, now)
        self._log_record(exchange, now)

    def flush(self) -> None:
        """At shutdown: the access log writes the lines it holds."""
        self._access_log.flush()
