"""``[tracing]``: its keys and their validation, ``bff check`` without the ``bff[otel]`` extra, and the promise that a
process without tracing never imports OpenTelemetry (nothing of it on the hot path)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from bff.config import TracingSettings, parse_config
from bff.errors import ConfigError
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
        print(type(app.store).__name__, type(app.upstream).__name__)
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
        print(app.tracing, type(app.store).__name__)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "MemoryStore"]
