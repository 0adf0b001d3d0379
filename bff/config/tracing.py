"""``[tracing]``: OpenTelemetry traces, when the ``bff[otel]`` extra is installed."""

from __future__ import annotations

import importlib.util

from bff.config.reader import Reader, table
from bff.config.settings import TracingSettings

#: What ``bff[otel]`` installs and ``bff.telemetry.tracing`` imports.
OTEL_MODULES = ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter")


def otel_installed() -> bool:
    """Whether the ``bff[otel]`` extra is importable (looked up, not imported: nothing runs)."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in OTEL_MODULES)
    except ImportError:  # find_spec imports the parent packages; a missing one is the same answer
        return False


def read_tracing(root: Reader) -> TracingSettings:
    r = table(root, "tracing", TracingSettings)
    enabled = r.get("enabled", bool)
    propagate = r.get("propagate_from_browser", bool)
    if enabled and not otel_installed():
        r.problem(
            "enabled",
            "tracing needs the OpenTelemetry SDK and OTLP exporter, which are not installed: "
            "pip install 'bff[otel]' (or set enabled = false)",
        )
    r.finish()
    return TracingSettings(enabled=enabled, propagate_from_browser=propagate)
