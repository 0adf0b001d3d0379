"""What the tracing tests run: a stand-in OpenTelemetry collector (an ASGI app that takes OTLP/HTTP trace exports,
protobuf as the SDK's exporter posts them to ``/v1/traces``, keeps every body as received and decodes them into
spans), and a recorder of the W3C headers an upstream or the IdP receives."""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from bff.types import Receive, Scope, Send
from tests.support.asgi import read_body


@dataclass
class Recorder:
    """An ASGI app in front of another that records the W3C headers of every request it gets."""

    app: Any
    traceparents: list[tuple[str, str | None]] = field(default_factory=list)
    tracestates: list[str | None] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            parent = headers.get(b"traceparent")
            state = headers.get(b"tracestate")
            self.traceparents.append((scope["path"], parent.decode() if parent else None))
            self.tracestates.append(state.decode() if state else None)
        await self.app(scope, receive, send)


def value_of(value: AnyValue) -> object:
    kind = value.WhichOneof("value")
    return None if kind is None else getattr(value, kind)


@dataclass
class ExportedSpan:
    span: Span
    service: str

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_id(self) -> str:
        return self.span.parent_span_id.hex()

    @property
    def attributes(self) -> dict[str, object]:
        return {a.key: value_of(a.value) for a in self.span.attributes}


@dataclass
class Collector:
    #: Every export's body, decompressed, in arrival order.
    bodies: list[bytes] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = await read_body(receive)
        if dict(scope["headers"]).get(b"content-encoding") == b"gzip":
            body = gzip.decompress(body)
        ExportTraceServiceRequest.FromString(body)  # a body that does not decode fails the export (and the test)
        with self._lock:
            self.bodies.append(body)
            self.paths.append(scope["path"])
        answer = ExportTraceServiceResponse().SerializeToString()
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/x-protobuf")]}
        )
        await send({"type": "http.response.body", "body": answer})

    def spans(self) -> list[ExportedSpan]:
        with self._lock:
            bodies = list(self.bodies)
        out: list[ExportedSpan] = []
        for body in bodies:
            for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans:
                resource = {a.key: value_of(a.value) for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    out.extend(ExportedSpan(span, str(resource.get("service.name"))) for span in scope_spans.spans)
        return out
