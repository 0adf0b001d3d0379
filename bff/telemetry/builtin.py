"""bff's built-in observers fused into one: request ids, metrics and the access record, one call per hook point.

Declared by ``bff.app.create_observers`` when both metrics and the access log are on. It does what the three
separate observers (``RequestIds``, ``HttpMetrics``, ``AccessLog``) would, with fewer calls: ``exchange`` makes the
request's exchange and gives it its request id in one call (no start-hook loop); ``end`` is the access log's, which
observes the request duration as it formats the line, and the last upstream call's duration too when its answer is
below 400 (one lookup names the line's fixed fields and both histograms). ``upstream`` observes at once only the
answers that may not be the last: a failure, or 400 and above (a replay follows only a 401). Its hooks catch their own
failures, so ``Observers`` calls them directly, not through its loop. User observers keep the generic seam
(``bff.telemetry.exchange``).
"""

from __future__ import annotations

import logging
from time import perf_counter

from bff.telemetry.access_log import AccessLog
from bff.telemetry.exchange import EXCHANGE, Exchange
from bff.telemetry.http_metrics import LAST_CALL_BELOW, HttpMetrics
from bff.telemetry.request_ids import RequestIdGenerator, RequestIds, assign
from bff.types import Scope

logger = logging.getLogger(__name__)


class BuiltinTelemetry(RequestIds, HttpMetrics):
    """``exchange`` is the request id's, ``upstream`` the metrics' (for the answers ``end`` does not observe), ``end``
    the access log's (which also observes the request duration and a last upstream answer below 400)."""

    #: Every hook catches and logs its own failure: as the only observer, ``Observers`` calls it without its loop.
    guards_itself = True

    def __init__(self, access_log: AccessLog, generate: RequestIdGenerator | None = None) -> None:
        RequestIds.__init__(self, generate)
        HttpMetrics.__init__(self)
        self._access_log = access_log
        access_log.observe_durations(self)
        self.end = access_log.end  # type: ignore[method-assign]  # the hook itself: one call fewer per request

    def exchange(self, scope: Scope, route: str) -> Exchange:
        """The request's exchange (also at ``scope[EXCHANGE]``), its request id set: ``Exchange()`` and the start
        hook in one call."""
        ex = Exchange(scope, route, perf_counter())
        try:
            assign(ex, self._ids)
        except Exception:
            logger.exception("the built-in telemetry hook failed at the request start")
        scope[EXCHANGE] = ex
        return ex

    def upstream(self, exchange: Exchange) -> None:
        status = exchange.upstream_status
        if status is None or status >= LAST_CALL_BELOW:  # ``last_call``, inline: the last is observed at the end
            HttpMetrics.upstream(self, exchange)

    def flush(self) -> None:
        """At shutdown: the access log writes the lines it holds."""
        self._access_log.flush()
