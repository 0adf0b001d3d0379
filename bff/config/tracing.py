"""``[tracing]``: OpenTelemetry traces, when the ``bff[otel]`` extra is installed."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from urllib.parse import urlsplit

from bff.config.reader import Reader, table
from bff.config.settings import TracingSettings

#: The samplers ``OTEL_TRACES_SAMPLER`` may name (the SDK's own; it falls back to the default on any other).
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
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
    if enabled and r.env.get("OTEL_SDK_DISABLED", "").strip().lower() != "true":
        if not otel_installed():
            r.problem(
                "enabled",
                "tracing needs the OpenTelemetry SDK and OTLP exporter, which are not installed: "
                "pip install 'bff[otel]' (or set enabled = false)",
            )
        r.problems.extend(f"tracing.enabled: {p}" for p in otel_environment_problems(r.env))
    r.finish()
    return TracingSettings(enabled=enabled, propagate_from_browser=propagate)


def otel_environment_problems(env: Mapping[str, str]) -> list[str]:
    """What the SDK would only warn about (falling back to a default) or fail on at the first export, checked up front:
    the sampler and its ratio, the protocol, the endpoints."""
    problems = []
    sampler = env.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if sampler and sampler not in SAMPLERS:
        problems.append(f"OTEL_TRACES_SAMPLER: expected one of {', '.join(SAMPLERS)}")
    if sampler.endswith("traceidratio") and "OTEL_TRACES_SAMPLER_ARG" in env:
        try:
            ratio = float(env["OTEL_TRACES_SAMPLER_ARG"])
        except ValueError:
            ratio = -1.0
        if not 0.0 <= ratio <= 1.0:
            problems.append("OTEL_TRACES_SAMPLER_ARG: expected a ratio from 0 to 1, like 0.1")
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = env.get(name, "").strip()
        if protocol and protocol != "http/protobuf":
            problems.append(f"{name}: bff exports OTLP over HTTP with protobuf only; expected http/protobuf")
    for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        endpoint = env.get(name, "").strip()
        parts = urlsplit(endpoint)
        if endpoint and (parts.scheme not in ("http", "https") or not parts.hostname):
            problems.append(f"{name}: expected an http(s) URL like http://otel-collector:4318")
    return problems
