"""bff's metrics: plain-Python counters, gauges and histograms, and the whole catalogue as module-level objects.

The hot path touches only plain Python: ``METRIC.labels(**kw)`` is called once, where a route or an outcome is
bound at start, and the child it returns is kept; ``child.inc()`` is an add and ``child.observe(seconds)`` a
``bisect`` into one short bucket list. No lock per request (one event loop per process; a scrape thread reading a
value mid-update sees the previous or the next one; a histogram's batch of pending observations is folded under a
lock, see ``HistogramChild``), no mmap, no label lookups per request.

``prometheus_client`` renders these values (``bff.telemetry.exposition``); under ``bff serve --workers N`` each
worker writes a snapshot of its values that the scrape sums (``bff.telemetry.metrics_files``). Names and labels
follow the OpenTelemetry HTTP conventions as Prometheus renders them (TELEMETRY.md); every label value comes from a
closed set or from the configuration, never from a request (no user, session, token, address or query value).
"""

from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Generic, Literal, TypeVar

MetricKind = Literal["counter", "gauge", "histogram"]
#: How a gauge sums over worker processes: ``livesum`` over the live ones, ``max`` over all.
GaugeMode = Literal["livesum", "max"]

#: One bucket set for every histogram, 1 ms to 30 s (the upper bounds, ``le``); ``+Inf`` is implied.
BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: HTTP methods kept as themselves in ``http_request_method``; any other becomes ``_OTHER`` (OTel HTTP semconv).
STANDARD_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"})


def method_label(method: str) -> str:
    """``http_request_method``: the method, or ``_OTHER`` outside the standard set (bounded cardinality)."""
    return method if method in STANDARD_METHODS else "_OTHER"


class CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, n: float = 1.0) -> None:
        if n < 0:
            raise ValueError("a counter only goes up")
        self.value += n


class GaugeChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = value

    def inc(self, n: float = 1.0) -> None:
        self.value += n

    def dec(self, n: float = 1.0) -> None:
        self.value -= n


#: Held while a histogram's pending observations are folded in, and while a reader (a scrape thread) copies a
#: histogram's values: a reader never sees an observation both pending and counted, or neither.
_FOLDING = threading.Lock()


class HistogramChild:
    """``counts[i]``: observations in bucket ``i`` alone (``le=BUCKETS[i]``; the last is ``+Inf``), not cumulative.

    ``observe`` counts at once. The access log's end hook (its hottest caller) appends to ``pending`` instead, and
    its flush counts the batch (``fold_pending``): a sort and one ``bisect`` per bucket bound, in C, instead of one
    ``bisect`` and two additions per request. ``values`` includes what is pending, so no reader sees the difference.
    """

    __slots__ = ("counts", "pending", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0
        self.pending: list[float] = []

    def observe(self, seconds: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (Prometheus ``le`` is inclusive).
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds

    def fold(self) -> None:
        """Count the pending observations. Those appended meanwhile (by another thread) stay pending: the list is
        never replaced, only its counted head is removed."""
        with _FOLDING:
            pending = self.pending
            batch = pending[:]
            del pending[: len(batch)]
            self.counts[:], self.sum = _counted(self.counts, batch), self.sum + sum(batch)

    def values(self) -> tuple[list[int], float]:
        """(counts, sum) now, the pending observations included; safe from any thread."""
        with _FOLDING:
            counts, total, pending = list(self.counts), self.sum, list(self.pending)
        return (_counted(counts, pending), total + sum(pending)) if pending else (counts, total)

    def clear(self) -> None:
        with _FOLDING:
            self.counts[:] = [0] * len(self.counts)
            self.sum = 0.0
            self.pending.clear()

    @property
    def count(self) -> int:
        return sum(self.values()[0])


def fold_pending() -> None:
    """Fold every histogram's pending observations (``HistogramChild``): the access log's flush calls this, at most
    every ``FLUSH_DELAY``, so its cost is the number of histogram children, not of requests."""
    for metric in REGISTRY:
        if isinstance(metric, Histogram):
            for child in list(metric.children.values()):
                if child.pending:
                    child.fold()


def _counted(counts: list[int], observations: list[float]) -> list[int]:
    """``counts`` plus ``observations`` (sorted here): each bucket gets the observations up to its bound that the
    bucket below did not take (bisect_right: ``le`` is inclusive)."""
    if not observations:
        return counts
    observations.sort()
    out, below = list(counts), 0
    for i, bound in enumerate(BUCKETS):
        upto = bisect_right(observations, bound, below)
        out[i] += upto - below
        below = upto
    out[-1] += len(observations) - below
    return out


Child = CounterChild | GaugeChild | HistogramChild
C = TypeVar("C", CounterChild, GaugeChild, HistogramChild)


class Metric(Generic[C]):
    """One metric family: its name, help, label names (and, where closed, the allowed values) and its children."""

    kind: ClassVar[MetricKind]
    _child: Callable[[], C]

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...] = (),
        *,
        allowed: Mapping[str, tuple[str, ...]] | None = None,
        gauge_mode: GaugeMode = "livesum",
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.allowed = {key: frozenset(values) for key, values in (allowed or {}).items()}
        self.gauge_mode: GaugeMode = gauge_mode
        self.children: dict[tuple[str, ...], C] = {}
        if not labelnames:
            self.children[()] = self._child()

    def labels(self, **labels: str) -> C:
        """The child for these label values, created once; call at construction time and keep it."""
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {sorted(self.labelnames)}, got {sorted(labels)}")
        for label, value in labels.items():
            if not isinstance(value, str):
                raise TypeError(f"{self.name}: label {label} must be a str, got {type(value).__name__}")
            closed = self.allowed.get(label)
            if closed is not None and value not in closed:
                raise ValueError(f"{self.name}: {label}={value!r} is not one of {sorted(closed)}")
        key = tuple(labels[name] for name in self.labelnames)
        child = self.children.get(key)
        if child is None:
            child = self.children[key] = self._child()
        return child

    def _only(self) -> C:
        if self.labelnames:
            raise ValueError(f"{self.name} has labels {list(self.labelnames)}: use .labels(...)")
        return self.children[()]


class Counter(Metric[CounterChild]):
    kind = "counter"
    _child = CounterChild

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...] = (), **kw: Any) -> None:
        if not name.endswith("_total"):
            raise ValueError(f"counter {name!r}: counter names end in _total")
        super().__init__(name, documentation, labelnames, **kw)

    def inc(self, n: float = 1.0) -> None:
        self._only().inc(n)


class Gauge(Metric[GaugeChild]):
    kind = "gauge"
    _child = GaugeChild
    #: When set, the gauge's value is this function's answer at collection time (e.g. a live count).
    function: Callable[[], float] | None = None

    def set_function(self, function: Callable[[], float]) -> None:
        self.function = function

    def inc(self, n: float = 1.0) -> None:
        self._only().inc(n)

    def dec(self, n: float = 1.0) -> None:
        self._only().dec(n)

    def set(self, value: float) -> None:
        self._only().set(value)


class Histogram(Metric[HistogramChild]):
    kind = "histogram"
    _child = HistogramChild

    def observe(self, seconds: float) -> None:
        self._only().observe(seconds)


AnyMetric = Counter | Gauge | Histogram

#: Every metric bff exports, in exposition order.
REGISTRY: list[AnyMetric] = []


def counter(name: str, documentation: str, labelnames: tuple[str, ...] = (), **allowed: tuple[str, ...]) -> Counter:
    metric = Counter(name, documentation, labelnames, allowed=allowed)
    REGISTRY.append(metric)
    return metric


def histogram(name: str, documentation: str, labelnames: tuple[str, ...] = (), **allowed: tuple[str, ...]) -> Histogram:
    metric = Histogram(name, documentation, labelnames, allowed=allowed)
    REGISTRY.append(metric)
    return metric


def gauge(name: str, documentation: str, labelnames: tuple[str, ...] = (), *, mode: GaugeMode = "livesum") -> Gauge:
    metric = Gauge(name, documentation, labelnames, gauge_mode=mode)
    REGISTRY.append(metric)
    return metric


# --- the catalogue (names are a contract with dashboards, alerts and the other modules) -----------------------------

UPSTREAM_ERROR_KINDS = ("connect_error", "timeout", "bad_response", "status_5xx")
REFRESH_OUTCOMES = ("ok", "joined", "invalid_grant", "idp_unavailable", "sub_mismatch", "error")
EXCHANGE_OUTCOMES = ("ok", "joined", "refused", "denied", "idp_unavailable", "error")
SESSION_END_REASONS = (
    "logout",
    "logout_everywhere",
    "backchannel",
    "expired",
    "revoked",
    "refresh_failed",
    "replaced",
)
LOGIN_OUTCOMES = ("ok", "idp_error", "invalid_state", "expired", "error")
#: The ``SessionStore`` methods (``bff.session.store``), one label value each: the seam is the closed set.
STORE_OPERATIONS = (
    "get",
    "set",
    "set_if_absent",
    "compare_and_set",
    "touch",
    "get_and_touch",
    "ttl",
    "take",
    "delete",
    "index_add",
    "index_remove",
    "index_members",
    "lock",
    "extend_lock",
    "unlock",
    "ping",
)
JWKS_TRIGGERS = ("startup", "unknown_kid", "expired")
IDP_ROUTES = ("idp:token", "idp:jwks", "idp:discovery", "idp:revocation", "idp:par", "idp:end_session", "idp:userinfo")

HTTP_SERVER_DURATION = histogram(
    "http_server_request_duration_seconds",
    "Duration of requests as the browser saw them, by route prefix (or control-plane endpoint), method and status.",
    ("http_request_method", "http_route", "http_response_status_code"),
)
HTTP_CLIENT_DURATION = histogram(
    "http_client_request_duration_seconds",
    "Duration of bff's calls to upstreams (bff_route: the route prefix; until the answer's head) and to the IdP"
    " (bff_route: idp:token, idp:jwks, idp:discovery, idp:revocation, idp:par; until the answer is read)."
    " An IdP call that got no answer (refused, reset, timed out) has http_response_status_code 'error'; an upstream"
    " call without answer counts in bff_upstream_errors_total instead.",
    ("server_address", "http_request_method", "http_response_status_code", "bff_route"),
)
UPSTREAM_ERRORS = counter(
    "bff_upstream_errors_total",
    "Upstream calls that failed, by route prefix and kind.",
    ("bff_route", "kind"),
    kind=UPSTREAM_ERROR_KINDS,
)
TOKEN_REFRESH = counter(
    "bff_token_refresh_total",
    "Requests that needed a token refresh, one each, by what they got: ok (this request's refresh called the IdP),"
    " joined (it used the result of a refresh by another request, process or instance), invalid_grant (refused or"
    " reuse detected: the session ended), idp_unavailable (IdP down or slow past the request's deadline),"
    " sub_mismatch (the refreshed ID token names another user), error (anything else). A request that went away"
    " before the answer is not counted.",
    ("outcome",),
    outcome=REFRESH_OUTCOMES,
)
TOKEN_EXCHANGE = counter(
    "bff_token_exchange_total",
    "Requests on a route with exchange (RFC 8693) that needed its token exchanged, one each, by what they got: ok"
    " (this request's exchange called the IdP), joined (it used an exchange by another request, process or"
    " instance), refused (502 token_exchange_refused), denied (401 token_exchange_denied: the IdP refused the user's"
    " token), idp_unavailable (IdP down or slow past the request's deadline), error (anything else, the session"
    " ending included). Not counted in bff_token_refresh_total, the login's refresh such a request needed included.",
    ("outcome",),
    outcome=EXCHANGE_OUTCOMES,
)
TOKEN_REFRESH_DURATION = histogram(
    "bff_token_refresh_duration_seconds",
    "How long a request waited for its token refresh, joined or not, whatever the outcome.",
)
SESSIONS_CREATED = counter("bff_sessions_created_total", "Sessions created (successful logins).")
SESSIONS_ENDED = counter(
    "bff_sessions_ended_total",
    "Sessions bff ended, one each, by reason: logout, logout_everywhere, backchannel, revoked (bff sessions revoke),"
    " refresh_failed (the IdP refused the refresh), replaced (a new login in the same browser), expired (an absolute"
    " or refresh-token expiry noticed on use). A session whose idle timeout lets its record expire in the store is"
    " not counted: nothing notices it.",
    ("reason",),
    reason=SESSION_END_REASONS,
)
LOGIN = counter(
    "bff_login_total",
    "Login callbacks by outcome: ok, idp_error (the IdP answered error=...), invalid_state (state, login cookie,"
    " one-time marker, iss or nonce refused), expired (login_timeout passed), error (anything else).",
    ("outcome",),
    outcome=LOGIN_OUTCOMES,
)
STORE_DURATION = histogram(
    "bff_store_operation_duration_seconds",
    "Duration of session-store calls, one observation per call of a SessionStore method (operation), failed or"
    " not; a connection retry inside a call is part of that call.",
    ("operation",),
    operation=STORE_OPERATIONS,
)
STORE_ERRORS = counter(
    "bff_store_errors_total",
    "Session-store calls that failed (store unreachable, timed out, closed), one per call whatever the retries"
    " inside it.",
    ("operation",),
    operation=STORE_OPERATIONS,
)
JWKS_FETCH = counter(
    "bff_jwks_fetch_total",
    "JWKS fetches started, failed or not, by trigger: startup (until a first set is cached), unknown_kid (a token"
    " named a key not cached), expired (the cached set outlived its max age).",
    ("trigger",),
    trigger=JWKS_TRIGGERS,
)
CONNECTIONS_OPEN = gauge("bff_connections_open", "Browser connections open (summed over the live workers).")
BUILD_INFO = gauge(
    "bff_build_info", "Always 1; the labels say which bff and Python run.", ("version", "python"), mode="max"
)


def by_name(name: str) -> AnyMetric | None:
    for metric in REGISTRY:
        if metric.name == name:
            return metric
    return None


def samples(
    metric: AnyMetric, children: Mapping[tuple[str, ...], Child]
) -> Iterator[tuple[str, dict[str, str], float]]:
    """The samples of one family as the text exposition names them (``_total``, ``_bucket``/``_count``/``_sum``)."""
    for key, child in children.items():
        labels = dict(zip(metric.labelnames, key, strict=True))
        if isinstance(child, HistogramChild):
            counts, total = child.values()
            cumulative = 0
            for bound, count in zip((*BUCKETS, float("inf")), counts, strict=True):
                cumulative += count
                yield metric.name + "_bucket", {**labels, "le": _le(bound)}, float(cumulative)
            yield metric.name + "_count", labels, float(cumulative)
            yield metric.name + "_sum", labels, total
        else:
            yield metric.name, labels, child.value


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def sample_value(name: str, labels: Mapping[str, str] | None = None) -> float | None:
    """This process's current value of one sample (``prometheus_client``'s ``REGISTRY.get_sample_value``), for tests.

    ``name`` as exposed: ``bff_login_total``, ``http_server_request_duration_seconds_count``, ``..._bucket`` (with
    ``le`` among the labels, e.g. ``"0.005"`` or ``"+Inf"``); None when no such sample exists yet.
    """
    wanted = dict(labels or {})
    for metric in REGISTRY:
        if not name.startswith(metric.name):
            continue
        for sample_name, sample_labels, value in samples(metric, metric.children):
            if sample_name == name and sample_labels == wanted:
                return value
    return None


def reset_for_tests() -> None:
    """Zero every value (children stay bound, so objects kept by the code under test still count)."""
    for metric in REGISTRY:
        for child in metric.children.values():
            if isinstance(child, HistogramChild):
                child.clear()
            else:
                child.value = 0.0
