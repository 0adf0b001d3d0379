"""``[tracing]``: its keys and their validation, ``bff check`` without the ``bff[otel]`` extra, and the promise that a
process without tracing never imports OpenTelemetry (nothing of it on the hot path)."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from bff.config import TracingSettings, parse_config
from bff.errors import ConfigError
from bff.telemetry.tracing import Tracing
from tests.support.configs import SESSION_KEY, base_document

ROOT = Path(__file__).resolve().parents[2]


def tracing_problems(section: dict[str, Any]) -> list[str]:
    doc = {**base_document(), "tracing": section}
    with pytest.raises(ConfigError) as info:
        parse_config(doc, env={})
    return info.value.problems


def test_tracing_is_off_and_starts_new_traces_by_default() -> None:
    assert parse_config(base_document(), env={}).tracing == TracingSettings(enabled=False, propagate_from_browser=False)


def test_tracing_keys_are_read() -> None:
    doc = {**base_document(), "tracing": {"enabled": True, "propagate_from_browser": True}}
    assert parse_config(doc, env={}).tracing == TracingSettings(enabled=True, propagate_from_browser=True)


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"enabled": "yes"}, "tracing.enabled: expected bool, got str"),
        ({"enabled": 1}, "tracing.enabled: expected bool, got int"),
        ({"propagate_from_browser": "true"}, "tracing.propagate_from_browser: expected bool, got str"),
        ({"enable": True}, "tracing.enable: unknown key (did you mean `enabled`?"),
    ],
)
def test_bad_tracing_values_are_named(section: dict[str, Any], problem: str) -> None:
    found = tracing_problems(section)
    assert any(p.startswith(problem) for p in found), found


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER: expected one of always_on, always_off"),
        (
            {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "ten percent"},
            "OTEL_TRACES_SAMPLER_ARG: expected a ratio from 0 to 1",
        ),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"}, "OTEL_TRACES_SAMPLER_ARG"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL: bff exports OTLP over HTTP"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT: expected an http(s) URL"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "ftp://x"}, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: expected an http(s)"),
    ],
)
def test_otel_variables_the_sdk_would_only_warn_about_are_refused_up_front(env: dict[str, str], problem: str) -> None:
    doc = {**base_document(), "tracing": {"enabled": True}}
    with pytest.raises(ConfigError) as info:
        parse_config(doc, env=env)
    assert [p for p in info.value.problems if p.startswith(f"tracing.enabled: {problem}")], info.value.problems
    # Tracing off, or turned off by OTEL_SDK_DISABLED: the variables are none of bff's business.
    parse_config(base_document(), env=env)
    parse_config(doc, env={**env, "OTEL_SDK_DISABLED": "true"})


def test_good_otel_variables_pass() -> None:
    env = {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://otel-collector.example.net:4318",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    }
    assert parse_config({**base_document(), "tracing": {"enabled": True}}, env=env).tracing.enabled


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False
    )


def config_file(tmp_path: Path, *, enabled: bool) -> Path:
    path = tmp_path / "bff.toml"
    path.write_text(
        textwrap.dedent(f"""
        [server]
        listen = "127.0.0.1:8000"
        public_origin = "http://127.0.0.1:8000"
        [session]
        keys = ["{SESSION_KEY}"]
        [oidc]
        issuer = "http://127.0.0.1:9"
        client_id = "spa-bff"
        client_secret = "s"
        [[routes]]
        path = "/api"
        upstream = "http://127.0.0.1:9"
        [tracing]
        enabled = {"true" if enabled else "false"}
        """)
    )
    return path


def test_bff_check_says_what_to_install_when_tracing_is_on_without_the_extra(tmp_path: Path) -> None:
    config = config_file(tmp_path, enabled=True)
    # The extra "uninstalled": importing opentelemetry fails as it would without the packages.
    result = run_python(f"""
        import sys
        sys.modules["opentelemetry"] = None
        from bff.cli import main
        sys.exit(main(["check", "--config", {str(config)!r}]))
    """)
    assert result.returncode == 2, result
    assert "tracing.enabled: tracing needs the OpenTelemetry SDK" in result.stderr
    assert "pip install 'bff[otel]'" in result.stderr
    # The same file passes where the extra is installed.
    result = run_python(f"import sys; from bff.cli import main; sys.exit(main(['check', '--config', {str(config)!r}]))")
    assert result.returncode == 0, result


@pytest.mark.parametrize("enabled", [False, True])
def test_opentelemetry_is_imported_only_when_tracing_is_on(tmp_path: Path, enabled: bool) -> None:
    config = config_file(tmp_path, enabled=enabled)
    result = run_python(f"""
        import sys
        from bff.app import app_for_serving
        from bff.cli import build_parser
        from bff.config import load_config
        app = app_for_serving(load_config({str(config)!r}))
        # redis-py imports opentelemetry.sdk.metrics by itself when it is installed: bff's tracing is what counts.
        tracing = ("bff.telemetry.tracing", "opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http")
        print(sorted(name for name in tracing if name in sys.modules))
        print(type(app.store.inner).__name__, type(app.upstream).__name__)
    """)
    assert result.returncode == 0, result.stderr
    loaded, types = result.stdout.splitlines()
    if enabled:
        assert (
            loaded == "['bff.telemetry.tracing', 'opentelemetry.exporter.otlp.proto.http', 'opentelemetry.sdk.trace']"
        )
        assert types == "TracedStore TracedUpstreamClient"
    else:
        assert loaded == "[]"
        assert types == "MemoryStore UpstreamClient"


def test_otel_sdk_disabled_turns_tracing_off(tmp_path: Path) -> None:
    config = config_file(tmp_path, enabled=True)
    result = run_python(f"""
        import os, sys
        os.environ["OTEL_SDK_DISABLED"] = "true"
        from bff.app import BffApp
        from bff.config import load_config
        app = BffApp(load_config({str(config)!r}))
        print(app.tracing, type(app.store.inner).__name__)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "MemoryStore"]


class Blocked(SpanExporter):
    """An exporter that never finishes a batch while the test runs (a collector that does not answer)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.exporting = threading.Event()
        self.exported = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exporting.set()
        self.release.wait(30)
        self.exported.set()
        return SpanExportResult.SUCCESS


def test_shutdown_does_not_wait_for_a_collector_that_does_not_answer() -> None:
    exporter = Blocked()
    tracing = Tracing(TracingSettings(enabled=True), exporter=exporter)
    try:
        with tracing.span("store get", "client"):
            pass
        tracing.shutdown(timeout=0.2)  # exports the span: the exporter hangs until released
        assert not exporter.exported.is_set()  # shutdown came back without waiting for it
        assert exporter.exporting.wait(10)  # and the span did go to the exporter
    finally:
        exporter.release.set()


def test_a_full_span_queue_is_one_log_line_not_one_per_dropped_span(caplog: pytest.LogCaptureFixture) -> None:
    """A load beyond what the exporter sends must not become a flood of log lines (the SDK's duplicate filter on its
    processor's logger sees to it; this keeps it so across SDK versions)."""
    exporter = Blocked()
    processor = BatchSpanProcessor(exporter, max_queue_size=4, max_export_batch_size=2, schedule_delay_millis=60_000)
    tracing = Tracing(TracingSettings(enabled=True), processor=processor)
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(200):
                with tracing.span("store get", "client"):
                    pass
    finally:
        exporter.release.set()
        tracing.shutdown()
    notices = [r for r in caplog.records if r.getMessage().startswith("Queue full")]
    assert len(notices) == 1, len(notices)
