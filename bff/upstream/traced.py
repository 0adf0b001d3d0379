"""``TracedUpstreamClient``: the data-plane client with a CLIENT span per request sent upstream.

Chosen in the composition root only when tracing is on. The request carries W3C ``traceparent``/``tracestate``
naming this span (W3C Trace Context 2), replacing whatever the browser sent under those names, so an upstream
joins bff's trace. The span holds the method, the upstream's host and port and the status; never the target (its
query) or a header.
"""

from __future__ import annotations

from collections.abc import Sequence

from bff.errors import UpstreamError
from bff.telemetry.spans import TRACE_HEADERS, AttributeValue, Spans
from bff.upstream.client import TransportOptions, UpstreamClient
from bff.upstream.request_head import RequestBody, split_url
from bff.upstream.response import UpstreamResponse


class TracedUpstreamClient(UpstreamClient):
    def __init__(self, spans: Spans, *, keepalive_timeout: float = 30.0, read_bufsize: int = 2**16) -> None:
        super().__init__(keepalive_timeout=keepalive_timeout, read_bufsize=read_bufsize)
        self._spans = spans

    async def send(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: RequestBody,
        options: TransportOptions,
    ) -> UpstreamResponse:
        attributes: dict[str, AttributeValue] = {"http.request.method": method}
        try:
            origin, _ = split_url(url)
        except ValueError:
            pass  # the parent's send refuses it with its own error
        else:
            attributes["server.address"] = origin.host
            attributes["server.port"] = origin.port
        with self._spans.span(method, "client", attributes) as span:
            traced = [(name, value) for name, value in headers if name not in TRACE_HEADERS]
            span.inject(traced)
            try:
                response = await super().send(method, url, traced, body, options)
            except UpstreamError as exc:
                span.fail(exc.error)
                raise
            span.set("http.response.status_code", response.status)
            if response.status >= 400:  # OpenTelemetry HTTP client rule: 4xx and 5xx are errors of the call
                span.fail(str(response.status))
            return response
