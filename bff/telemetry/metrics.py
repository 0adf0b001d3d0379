"""bff's metrics: the whole catalogue as module-level objects, and reading them back (tests, the exposition).

The primitives (children, families, the registry, the bucket set) are ``bff.telemetry.instruments``, re-exported
here. ``prometheus_client`` renders these values (``bff.telemetry.exposition``); under ``bff serve --workers N`` each
worker writes a snapshot of its values that the scrape sums (``bff.telemetry.metrics_files``). Names and labels
follow the OpenTelemetry HTTP conventions as Prometheus renders them (TELEMETRY.md); every label value comes from a
closed set or from the configuration, never from a request (no user, session, token, address or query value).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from bff.telemetry.instruments import (
    BUCKETS,
    REGISTRY,
    STANDARD_METHODS,
    AnyMetric,
    Child,
    Counter,
    CounterChild,
    Gauge,
    GaugeChild,
    GaugeMode,
    Histogram,
    HistogramChild,
    Metric,
    MetricKind,
    counter,
    fold_pending,
    gauge,
    histogram,
    method_label,
)

__all__ = [
    "BUCKETS",
    "REGISTRY",
    "STANDARD_METHODS",
    "AnyMetric",
    "Child",
    "Counter",
    "CounterChild",
    "Gauge",
    "GaugeChild",
    "GaugeMode",
    "Histogram",
    "HistogramChild",
    "Metric",
    "MetricKind",
    "by_name",
    "counter",
    "fold_pending",
    "gauge",
    "histogram",
    "method_label",
    "reset_for_tests",
    "sample_value",
    "samples",
]

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
