"""OpenTelemetry traces (the ``bff[otel]`` extra): the SDK set up for one process, the :class:`~bff.telemetry.spans.
Spans` the domain code is handed, the server span of each request and the IdP client's transport.

Imported only when ``[tracing] enabled``: the composition root (``bff.app``) builds one :class:`Tracing` per app,
in the process that serves (each ``--workers`` process builds its own; the supervisor none, so no exporter thread
crosses a fork). The SDK is configured by the standard variables: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (and the
other ``OTEL_EXPORTER_OTLP_*``) for the OTLP/HTTP exporter, ``OTEL_TRACES_SAMPLER`` (+ ``_ARG``),
``OTEL_SERVICE_NAME`` (default ``bff``), ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_BSP_*``; ``OTEL_SDK_DISABLED=true``
builds nothing.

The provider is bff's own, not the global one: an embedding app keeps its tracing, and two apps in one process
(the test suite) do not share spans. Only W3C Trace Context is read and written (``traceparent``, ``tracestate``).

A browser is not a trusted peer (W3C Trace Context, "Security Considerations"; OpenTelemetry HTTP semantic
conventions on public endpoints): by default a request starts a new trace and links the browser's, so nobody outside
picks bff's trace ids or forces sampling. ``propagate_from_browser = true`` continues it instead (a first-party SPA
that traces itself). Either way a malformed header is ignored (never an error, never a log line: the browser chooses
it).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as distribution_version
from types import TracebackType
from typing import Any

import httpx
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Link, SpanContext, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import TraceState

from bff.config import TracingSettings
from bff.telemetry.exchange import BaseObserver, Exchange
from bff.telemetry.spans import AttributeValue, SpanKind, error_type

#: HTTP methods of the semantic conventions; any other is reported as ``_OTHER`` (bounded cardinality).
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
_KINDS = {"client": trace.SpanKind.CLIENT, "internal": trace.SpanKind.INTERNAL}
# W3C Trace Context 3.2: version-trace_id-parent_id-flags, lower-case hex; version 00 has nothing after the flags,
# a later version may (3.2.4: parse what this version defines).
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[\x21-\x7e]*)?")
# W3C Trace Context 3.3.1: list members ``key=value``; at most 32 of them, 512 characters in all.
_TRACESTATE_MEMBER = re.compile(
    r"(?:[a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
)
_TRACEPARENT_MAX = 512
_TRACESTATE_MAX = 512
_TRACESTATE_MEMBERS = 32
#: How long a stopping worker waits for its last spans to be exported.
SHUTDOWN_TIMEOUT = 2.0
#: The request's server span, from the start hook to the end hook (both run in the request's task).
_SERVER_SPAN: ContextVar[_Span | None] = ContextVar("bff_server_span", default=None)


def _bff_version() -> str:
    try:
        return distribution_version("bff")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def parse_traceparent(values: list[str]) -> SpanContext | None:
    """The remote span context of one ``traceparent`` field, or None: absent, repeated, malformed, an all-zero id,
    or version ``ff`` (W3C Trace Context 3.2.2: all invalid, so a new trace starts)."""
    if len(values) != 1 or len(values[0]) > _TRACEPARENT_MAX:
        return None
    match = _TRACEPARENT.fullmatch(values[0].strip(" \t"))
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(int(flags, 16) & 1))


def parse_tracestate(values: list[str]) -> TraceState | None:
    """The ``tracestate`` fields joined (RFC 9110 5.3), or None unless every member is well formed."""
    joined = ",".join(values)
    if not joined or len(joined) > _TRACESTATE_MAX:
        return None
    members = [m.strip(" \t") for m in joined.split(",")]
    members = [m for m in members if m]
    if not members or len(members) > _TRACESTATE_MEMBERS:
        return None
    if not all(_TRACESTATE_MEMBER.fullmatch(m) for m in members):
        return None
    keys = [m.partition("=")[0] for m in members]
    if len(set(keys)) != len(keys):
        return None
    return TraceState([(k, m.partition("=")[2]) for k, m in zip(keys, members, strict=True)])


def browser_context(headers: Iterable[tuple[bytes, bytes]]) -> SpanContext | None:
    """The trace a browser's request names (``traceparent``, with its ``tracestate`` when that is valid too)."""
    parents: list[str] = []
    states: list[str] = []
    for name, value in headers:
        if name == b"traceparent":
            parents.append(value.decode("latin-1"))
        elif name == b"tracestate":
            states.append(value.decode("latin-1"))
    if not parents:
        return None
    parent = parse_traceparent(parents)
    if parent is None or not states:
        return parent
    state = parse_tracestate(states)
    if state is None:
        return parent
    return SpanContext(
        parent.trace_id, parent.span_id, is_remote=True, trace_flags=parent.trace_flags, trace_state=state
    )


class _Span:
    """One span, current while its ``with`` block runs (``bff.telemetry.spans.Span``)."""

    __slots__ = ("_failed", "_propagator", "_span", "_token")

    def __init__(self, span: trace.Span, propagator: TraceContextTextMapPropagator) -> None:
        self._span = span
        self._propagator = propagator
        self._token: object = None
        self._failed = False

    @property
    def span_context(self) -> SpanContext:
        return self._span.get_span_context()

    def set(self, key: str, value: AttributeValue) -> None:
        self._span.set_attribute(key, value)

    def fail(self, error_type: str) -> None:
        self._failed = True
        self._span.set_attribute("error.type", error_type)
        self._span.set_status(Status(StatusCode.ERROR))  # no description: it would be a message

    def inject(self, headers: list[tuple[str, str]]) -> None:
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=trace.set_span_in_context(self._span))
        headers.extend(carrier.items())

    def __enter__(self) -> _Span:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is not None and not self._failed:
            self.fail(error_type(exc))
        self._span.end()
        otel_context.detach(self._token)  # type: ignore[arg-type]


class _Unrecorded:
    """A span not made, below a request that is not sampled (``bff.telemetry.spans.Span``): it records nothing and
    names the request's span in outgoing headers."""

    __slots__ = ("_parent", "_propagator")

    def __init__(self, parent: trace.Span, propagator: TraceContextTextMapPropagator) -> None:
        self._parent = parent
        self._propagator = propagator

    def set(self, key: str, value: AttributeValue) -> None:
        pass

    def fail(self, error_type: str) -> None:
        pass

    def inject(self, headers: list[tuple[str, str]]) -> None:
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=trace.set_span_in_context(self._parent))
        headers.extend(carrier.items())

    def __enter__(self) -> _Unrecorded:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        pass


class Tracing:
    """The SDK for one app: its provider and tracer, the spans of the domain code, the server spans."""

    def __init__(
        self,
        settings: TracingSettings,
        *,
        processor: SpanProcessor | None = None,
        exporter: SpanExporter | None = None,
    ) -> None:
        self.settings = settings
        bff_version = _bff_version()
        resource = Resource.create({"service.version": bff_version})
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: "bff"}))
        # The sampler comes from OTEL_TRACES_SAMPLER (+ _ARG): the SDK reads them when none is given.
        self.provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        if processor is None:
            if exporter is None:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

                exporter = OTLPSpanExporter()  # OTEL_EXPORTER_OTLP_* from the environment
            processor = BatchSpanProcessor(exporter)
        self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer("bff", bff_version)
        self.propagator = TraceContextTextMapPropagator()

    # --- bff.telemetry.spans.Spans -------------------------------------------------------------------------------

    def span(
        self, name: str, kind: SpanKind, attributes: dict[str, AttributeValue] | None = None
    ) -> _Span | _Unrecorded:
        current = trace.get_current_span()
        if not current.is_recording() and current.get_span_context().is_valid:
            # Inside a request that is not sampled: its children would not be either (the samplers decide per
            # trace), so none is made; calls made below carry the request's trace context on.
            return _Unrecorded(current, self.propagator)
        span = self.tracer.start_span(
            name, kind=_KINDS[kind], attributes=attributes, record_exception=False, set_status_on_exception=False
        )
        return _Span(span, self.propagator)

    # --- the server span of one request ------------------------------------------------------------------------

    def start_request(self, method: str, path: str, route: str, headers: Iterable[tuple[bytes, bytes]]) -> _Span:
        """The request's server span, already current (``with``-entered); :meth:`end_request` ends it. ``route`` is
        bff's name for what served it: a route prefix or endpoint path (also ``http.route``), ``frontend`` or
        ``unmatched`` (``bff.route`` only: no route template)."""
        method = method if method in KNOWN_METHODS else "_OTHER"
        links: list[Link] = []
        if trace.get_current_span().get_span_context().is_valid:
            # Mounted in an application that traces its requests: bff's span is a child of the host's (which chose
            # what to make of the browser's trace context).
            parent = otel_context.get_current()
            remote = None
        else:
            parent = otel_context.Context()  # a new trace unless the browser's is continued
            remote = browser_context(headers)
        if remote is not None:
            if self.settings.propagate_from_browser:
                parent = trace.set_span_in_context(trace.NonRecordingSpan(remote), parent)
            else:  # linked, without its tracestate: the browser's words never reach the backend as attributes
                links.append(Link(SpanContext(remote.trace_id, remote.span_id, True, remote.trace_flags)))
        attributes: dict[str, Any] = {"http.request.method": method, "url.path": path, "bff.route": route}
        template = route.startswith("/")
        if template:
            attributes["http.route"] = route
        span = self.tracer.start_span(
            f"{method} {route}" if template else method,
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes=attributes,
            links=links,
            record_exception=False,
            set_status_on_exception=False,
        )
        return _Span(span, self.propagator).__enter__()

    @staticmethod
    def end_request(span: _Span, status: int, error: str | None) -> None:
        """Status code and error code on the server span (ERROR for 5xx: OpenTelemetry HTTP server rule), then
        end it and restore the context it replaced. Status 0: the browser left before an answer."""
        if status:
            span.set("http.response.status_code", status)
        if error is not None:
            span.set("error.type", error)
        if status >= 500:
            span.fail(error or str(status))
        span.__exit__(None, None, None)

    # --- the IdP client ------------------------------------------------------------------------------------------

    def idp_transport(
        self, inner: httpx.AsyncBaseTransport, endpoint_name: Callable[[str], str] | None = None
    ) -> httpx.AsyncBaseTransport:
        return TracedTransport(inner, self, endpoint_name)

    def observer(self) -> TracingObserver:
        return TracingObserver(self)

    def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT) -> None:
        """Export what is buffered and stop the exporter (at the end of the app's lifespan), waiting at most
        ``timeout``: a collector that does not answer is retried by the exporter for its own timeout, and a worker's
        exit must not wait for that. What is left then is dropped with the process."""
        stopping = threading.Thread(target=self.provider.shutdown, name="bff-tracing-shutdown", daemon=True)
        stopping.start()
        stopping.join(timeout)


class TracingObserver(BaseObserver):
    """The per-request observer (``bff.telemetry.exchange``) that opens and closes each request's server span. Its
    start hook runs in the request's task before the session is read, so the spans of the store, a refresh and the
    upstream call become the server span's children (the upstream call has a span of its own, so no upstream hook)."""

    #: W3C trace context is bff's to send upstream (``bff.upstream.traced``): a browser's is never forwarded, and an
    #: upstream's never relayed to the browser.
    owned_headers = frozenset({b"traceparent", b"tracestate"})

    def __init__(self, tracing: Tracing) -> None:
        self._tracing = tracing

    def start(self, exchange: Exchange) -> None:
        path = exchange.path.decode("ascii", "replace")
        span = self._tracing.start_request(exchange.method, path, exchange.route, exchange.headers)
        context = span.span_context
        exchange.trace_id = format(context.trace_id, "032x")
        exchange.span_id = format(context.span_id, "016x")
        _SERVER_SPAN.set(span)

    def end(self, exchange: Exchange) -> None:
        span = _SERVER_SPAN.get()
        if span is not None:
            _SERVER_SPAN.set(None)
            self._tracing.end_request(span, exchange.status, exchange.error)


class TracedTransport(httpx.AsyncBaseTransport):
    """The IdP client's transport with a CLIENT span per call and W3C ``traceparent`` on the request. Only the method,
    host, port, status and which endpoint it is (``endpoint_name``, from the IdP's metadata) are recorded: the URL's
    query, the body (a code, a refresh token, the client secret) and the headers (``Authorization``) never are."""

    def __init__(
        self, inner: httpx.AsyncBaseTransport, tracing: Tracing, endpoint_name: Callable[[str], str] | None = None
    ) -> None:
        self._inner = inner
        self._tracing = tracing
        self._endpoint_name = endpoint_name

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        endpoint = str(url.copy_with(query=None, fragment=None))
        attributes: dict[str, AttributeValue] = {
            "http.request.method": request.method,
            "server.address": url.host,
            "server.port": url.port or (443 if url.scheme == "https" else 80),
            "bff.route": "idp" if self._endpoint_name is None else self._endpoint_name(endpoint),
        }
        with self._tracing.span(request.method, "client", attributes) as span:
            trace_headers: list[tuple[str, str]] = []
            span.inject(trace_headers)
            for name, value in trace_headers:
                request.headers[name] = value
            response = await self._inner.handle_async_request(request)
            span.set("http.response.status_code", response.status_code)
            if response.status_code >= 400:
                span.fail(str(response.status_code))
            return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def create_tracing(settings: TracingSettings) -> Tracing | None:
    """The SDK for a serving process, or None when ``OTEL_SDK_DISABLED=true``."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    return Tracing(settings)
