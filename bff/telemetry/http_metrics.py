"""The metrics observer: ``http_server_request_duration_seconds`` per request, ``http_client_request_duration_seconds``
and ``bff_upstream_errors_total`` per upstream call.

Children are bound on first use of a (route, method, status) and kept in a dict keyed by that tuple, so a request
costs one tuple, one dict lookup and one ``observe`` per histogram: no label validation on the hot path.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from time import perf_counter

from bff.telemetry import metrics
from bff.telemetry.exchange import BaseObserver, Exchange
from bff.telemetry.metrics import BUCKETS, STANDARD_METHODS, CounterChild, HistogramChild

logger = logging.getLogger(__name__)

#: ``http_response_status_code`` of a request whose browser left before any answer was sent (nginx's convention).
CLIENT_CLOSED = 499


#: An upstream answer below this is its exchange's last call: the proxy replays only after a 401. The fused observer
#: observes such an answer at the request's end, with the access line, any other at once (``last_call``).
LAST_CALL_BELOW = 400


def last_call(upstream_status: int | None) -> bool:
    """Whether an upstream answer is its exchange's last call (``LAST_CALL_BELOW``)."""
    return upstream_status is not None and upstream_status < LAST_CALL_BELOW


class HttpMetrics(BaseObserver):
    """Observer recording the HTTP server and client metrics of every observed request."""

    def __init__(self) -> None:
        self._server: dict[tuple[str, str, int], HistogramChild] = {}
        self._client: dict[tuple[str, str, str, int], HistogramChild] = {}
        self._errors: dict[tuple[str, str], CounterChild] = {}

    def upstream(self, exchange: Exchange) -> None:
        try:  # guards itself (``Observers``): the fused observer's upstream is called without the seam's loop
            status = exchange.upstream_status
            route = exchange.route
            if status is None:
                self._error(route, exchange.upstream_error or "bad_response").inc()
                return
            key = (exchange.server_address, exchange.method, route, status)
            child = self._client.get(key) or self.client_child(exchange.server_address, exchange.method, route, status)
            # HistogramChild.observe, inline: a Python call is a good part of this hook's cost per request.
            seconds = exchange.upstream_duration
            child.counts[bisect_left(BUCKETS, seconds)] += 1
            child.sum += seconds
            if status >= 500:
                self._error(route, "status_5xx").inc()
        except Exception:
            logger.exception("the metrics hook failed at an upstream answer")

    def client_child(self, server_address: str, method: str, route: str, status: int) -> HistogramChild:
        """The upstream-call histogram of a (server address, method, route, status), kept under that key for a
        standard method (a client inventing methods must not grow this)."""
        label = method if method in STANDARD_METHODS else "_OTHER"
        key = (server_address, label, route, status)
        child = self._client.get(key)
        if child is None:
            child = self._client[key] = metrics.HTTP_CLIENT_DURATION.labels(
                server_address=server_address,
                http_request_method=label,
                http_response_status_code=str(status),
                bff_route=route,
            )
        return child

    def _error(self, route: str, kind: str) -> CounterChild:
        child = self._errors.get((route, kind))
        if child is None:
            child = self._errors[route, kind] = metrics.UPSTREAM_ERRORS.labels(bff_route=route, kind=kind)
        return child

    def end(self, exchange: Exchange) -> None:
        self.record(exchange, perf_counter())

    def record(self, exchange: Exchange, now: float) -> None:
        """Observe the request duration of ``exchange``, ended at ``now`` (a ``perf_counter()``)."""
        elapsed = now - exchange.started
        child = self._server.get((exchange.route, exchange.method, exchange.status))
        if child is None:
            child = self.server_child(exchange.route, exchange.method, exchange.status)
        child.counts[bisect_left(BUCKETS, elapsed)] += 1  # HistogramChild.observe, inline (as in upstream())
        child.sum += elapsed

    def record_with_last_call(self, exchange: Exchange, now: float) -> None:
        """``record``, and the last upstream call's duration when it is left to the end (``last_call``)."""
        self.record(exchange, now)
        status = exchange.upstream_status
        if status is not None and last_call(status):
            child = self.client_child(exchange.server_address, exchange.method, exchange.route, status)
            child.observe(exchange.upstream_duration)

    def server_child(self, route: str, method: str, status: int) -> HistogramChild:
        """The request-duration histogram of a (route, method, status), kept under that key for a standard method.

        Keyed by the method as sent only when it is its own label: a client inventing methods must not grow this."""
        standard = method in STANDARD_METHODS
        key = (route, method if standard else "_OTHER", status)
        child = self._server.get(key)
        if child is None:
            child = self._server[key] = metrics.HTTP_SERVER_DURATION.labels(
                http_request_method=key[1],
                http_route=route,
                http_response_status_code=str(status or CLIENT_CLOSED),
            )
        return child
