"""The per-request seam: one :class:`Exchange` per request, and the :class:`Observer` hooks that read it.

The data plane (``bff.proxy.asgi``) and the control-plane dispatch (``bff.app``) create an ``Exchange`` only when
observers are configured, fill in what happened, and call every observer at three points:

* ``start(exchange)``: the request is routed, before the session is read, a token refreshed or the upstream called;
  it runs in the request's own task, so a contextvar set here is seen by everything the request does after it
  (the store read, a refresh, the upstream call). An observer may append to ``upstream_headers`` (sent upstream:
  ``X-Request-Id``, ``traceparent``) and to ``response_headers`` (sent to the browser: ``X-Request-Id``).
* ``upstream(exchange)``: after each upstream answer's head, or its failure (twice after a 401, refresh and replay).
* ``end(exchange)``: the answer is complete, refused, failed, or the browser left (``status`` 0: nothing was sent).

Hooks are plain functions, not coroutines (no await on the hot path), and must not raise: one that does is logged
and the request goes on (an observer that declares ``guards_itself`` catches and logs its own ``upstream``
and ``end`` failures, see :class:`Observers`). Observers are declared as data in ``bff.app``
(``create_observers``); a user adds one by passing it to ``BffApp(observers=...)``, without touching the proxy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from time import perf_counter
from typing import Protocol

from bff.types import Scope

logger = logging.getLogger(__name__)

#: The scope key under which an observed request's exchange is found (``scope[EXCHANGE]``).
EXCHANGE = "bff.exchange"
#: ``http_route`` of a request no route, endpoint or frontend took (never the raw path: bounded cardinality).
UNMATCHED = "unmatched"
#: ``http_route`` of a request served by the frontend (the SPA's files or its dev server).
FRONTEND = "frontend"


class Exchange:
    """What one request did, filled in by the proxy or the control-plane dispatch as it happens.

    Times are ``time.perf_counter()`` seconds. Never holds a token, a cookie or a query value: ``path`` is the vetted
    raw path without its query string.
    """

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "error",
        "headers",
        "method",
        "path",
        "request_id",
        "response_headers",
        "route",
        "server_address",
        "session_key",
        "span_id",
        "started",
        "status",
        "trace_id",
        "upstream_duration",
        "upstream_error",
        "upstream_headers",
        "upstream_status",
        "upstream_time",
    )

    def __init__(self, scope: Scope, route: str, started: float) -> None:
        #: The request's header fields as received (ASGI: lowercase names); the exchange keeps no reference to the
        #: scope, which refers to it (``scope[EXCHANGE]``): no reference cycle per request for the collector.
        self.headers: list[tuple[bytes, bytes]] = scope["headers"]
        #: The request method as sent (the metrics observer maps it to a bounded label).
        self.method: str = scope["method"]
        #: The raw path as received, without the query string (vetted by ``bff.proxy.paths`` on the data plane).
        self.path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        #: The route prefix, the control-plane endpoint, ``frontend`` or ``unmatched``.
        self.route = route
        self.started = started
        #: The status sent to the browser; 0 while none was (and at the end if the browser left first).
        self.status = 0
        #: bff's error code (``bff.errors``) when bff answered with an error or the upstream failed.
        self.error: str | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        #: ``host:port`` of the route's upstream (data plane only).
        self.server_address = ""
        #: The last upstream answer's status; None before one (or when the upstream failed).
        self.upstream_status: int | None = None
        #: How long the last upstream call took to its answer's head (or failure), and the time spent in upstream
        #: calls so far (both calls after a 401 and a replay).
        self.upstream_duration = 0.0
        self.upstream_time = 0.0
        #: ``connect_error``, ``timeout`` or ``bad_response`` when the last upstream call failed.
        self.upstream_error: str | None = None
        #: Headers observers add to the upstream request and to the browser's answer.
        self.upstream_headers: list[tuple[str, str]] = []
        self.response_headers: list[tuple[bytes, bytes]] = []
        #: Set by observers: the request id, the trace (W3C trace context, lowercase hex).
        self.request_id: str | None = None
        self.trace_id: str | None = None
        self.span_id: str | None = None
        #: The session's store key once the session was read (a hash of the session id, never the cookie).
        self.session_key: str | None = None


class Observer(Protocol):
    """Per-request hooks (see the module docstring): synchronous, cheap, never raising."""

    def start(self, exchange: Exchange) -> None: ...

    def upstream(self, exchange: Exchange) -> None: ...

    def end(self, exchange: Exchange) -> None: ...


class BaseObserver:
    """No-op hooks to inherit: a hook left as it is here is not even called (one call fewer per request)."""

    def start(self, exchange: Exchange) -> None:
        pass

    def upstream(self, exchange: Exchange) -> None:
        pass

    def end(self, exchange: Exchange) -> None:
        pass


Hook = Callable[[Exchange], None]


def _hooks(observers: Sequence[Observer], name: str) -> tuple[Hook, ...]:
    """Each observer's hook ``name``, left out where it is ``BaseObserver``'s no-op (an instance may set its own)."""
    inherited = getattr(BaseObserver, name)
    hooks = (getattr(o, name) for o in observers)
    return tuple(hook for hook in hooks if getattr(hook, "__func__", None) is not inherited)


class Observers:
    """The configured observers, called in order (so an observer may read what an earlier one set).

    ``exchange`` (the start), ``upstream`` and ``end`` run every observer's hook of that point, each failure logged.
    When the only observer declares ``guards_itself`` (its hooks catch their own failures: the fused built-in one),
    ``upstream`` and ``end`` are its own hooks, called without the loop, and so is its ``exchange(scope, route)`` if
    it has one (it makes the exchange and runs its start in one call): one Python call fewer each per request.
    """

    __slots__ = ("_all", "_end", "_start", "_upstream", "end", "exchange", "owned_headers", "upstream")

    def __init__(self, observers: Sequence[Observer]) -> None:
        self._all = tuple(observers)
        self._start = _hooks(observers, "start")
        self._upstream = _hooks(observers, "upstream")
        self._end = _hooks(observers, "end")
        #: Header names (lowercase bytes) observers set themselves: what the browser sent under them is not forwarded,
        #: and the upstream's own is not relayed (an observer declares them as ``owned_headers``; optional).
        self.owned_headers: frozenset[bytes] = frozenset().union(
            *(getattr(o, "owned_headers", frozenset()) for o in observers)
        )
        self.exchange: Callable[[Scope, str], Exchange] = self._exchange_each
        self.upstream: Hook = self._upstream_each
        self.end: Hook = self._end_each
        if len(observers) == 1 and getattr(observers[0], "guards_itself", False):
            self.upstream, self.end = observers[0].upstream, observers[0].end
            self.exchange = getattr(observers[0], "exchange", self._exchange_each)

    def __bool__(self) -> bool:
        return bool(self._all)

    def _exchange_each(self, scope: Scope, route: str) -> Exchange:
        """A new exchange for this request (also at ``scope[EXCHANGE]``), its ``start`` hooks run."""
        exchange = Exchange(scope, route, perf_counter())
        scope[EXCHANGE] = exchange
        for hook in self._start:
            try:
                hook(exchange)
            except Exception:
                logger.exception("observer hook %s failed at the request start", hook.__qualname__)
        return exchange

    def _upstream_each(self, exchange: Exchange) -> None:
        for hook in self._upstream:
            try:
                hook(exchange)
            except Exception:
                logger.exception("observer hook %s failed at an upstream answer", hook.__qualname__)

    def _end_each(self, exchange: Exchange) -> None:
        for hook in self._end:
            try:
                hook(exchange)
            except Exception:
                logger.exception("observer hook %s failed at the request end", hook.__qualname__)

    def flush(self) -> None:
        """At shutdown: observers that buffer (an optional ``flush()``) write what they hold."""
        for observer in self._all:
            flush = getattr(observer, "flush", None)
            if flush is not None:
                flush()


NO_OBSERVERS = Observers(())
