"""The tracing seam as the domain code sees it: start a span, set an attribute, mark a failure, name the span in
outgoing W3C headers. No OpenTelemetry here: ``bff.telemetry.tracing`` implements :class:`Spans` with the SDK, and
is imported only when ``[tracing] enabled`` (so a process without tracing never loads the SDK, and code that is not
handed a :class:`Spans` pays nothing).

Attribute values are chosen by the caller from what it controls: a method, a status, a host, an operation name, an
error code. Never a token, cookie, code, state, secret, store key or query value.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Literal, Protocol

from bff.config import TracingSettings
from bff.errors import BffError

if TYPE_CHECKING:
    from bff.telemetry.tracing import Tracing

SpanKind = Literal["client", "internal"]
AttributeValue = str | int
#: Request headers of W3C Trace Context (a browser's are replaced by bff's own when tracing is on).
TRACE_HEADERS = frozenset({"traceparent", "tracestate"})


class Span(Protocol):
    def set(self, key: str, value: AttributeValue) -> None:
        """Set one attribute."""

    def fail(self, error_type: str) -> None:
        """Mark the span failed: status ERROR and ``error.type`` (a closed set: an error code, a status)."""

    def inject(self, headers: list[tuple[str, str]]) -> None:
        """Append ``traceparent`` (and ``tracestate``) naming this span, for the request it makes."""


class Spans(Protocol):
    def span(
        self, name: str, kind: SpanKind, attributes: dict[str, AttributeValue] | None = None
    ) -> AbstractContextManager[Span]:
        """A child of the current span, current itself inside the ``with``; an exception leaving the block marks it
        failed with :func:`error_type` (never the exception's message, which may quote what it failed on)."""


def error_type(exc: BaseException) -> str:
    """``error.type`` for an exception: bff's error code, or the class's qualified name (OpenTelemetry's rule)."""
    if isinstance(exc, BffError):
        return exc.error
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def load_tracing(settings: TracingSettings) -> Tracing | None:
    """The tracing SDK when ``[tracing] enabled`` (None when off, or ``OTEL_SDK_DISABLED=true``): imported only then,
    so a process without tracing never loads it."""
    if not settings.enabled:
        return None
    from bff.telemetry.tracing import create_tracing

    return create_tracing(settings)
