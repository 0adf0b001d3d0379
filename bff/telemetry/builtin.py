"""bff's built-in observers fused into one: request ids, metrics and the access record, one call per hook point.

Declared by ``bff.app.create_observers`` when both metrics and the access log are on. Each hook does what the three
separate observers (``RequestIds``, ``HttpMetrics``, ``AccessLog``) would, in the same order, with one clock read at
the end shared by the duration metric and the access line. Its hooks catch their own failures, so ``Observers`` calls
them directly, not through its loop. User observers keep the generic seam (``bff.telemetry.exchange``).
"""

from __future__ import annotations

import logging
from time import perf_counter

from bff.telemetry.access_log import AccessLog
from bff.telemetry.exchange import Exchange
from bff.telemetry.http_metrics import HttpMetrics
from bff.telemetry.request_ids import RequestIdGenerator, RequestIds

logger = logging.getLogger(__name__)


class BuiltinTelemetry(RequestIds, HttpMetrics):
    """``start`` is the request id's, ``upstream`` the metrics'; ``end`` records the metrics and the access line."""

    #: Every hook catches and logs its own failure: as the only observer, ``Observers`` calls it without its loop.
    guards_itself = True

    def __init__(self, access_log: AccessLog, generate: RequestIdGenerator | None = None) -> None:
        RequestIds.__init__(self, generate)
        HttpMetrics.__init__(self)
        self._access_log = access_log
        self._log_record = access_log.record

    def end(self, exchange: Exchange) -> None:
        try:
            now = perf_counter()
            HttpMetrics.record(self, exchange, now)
            self._log_record(exchange, now)
        except Exception:
            logger.exception("the built-in telemetry hook failed at the request end")

    def flush(self) -> None:
        """At shutdown: the access log writes the lines it holds."""
        self._access_log.flush()
