"""``[logging]``: the keys, and the one handler every logger (uvicorn's included) writes through."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import warnings
from collections.abc import Iterator

import pytest

from bff.config import LoggingSettings
from bff.errors import ConfigError
from bff.telemetry.logs import UVICORN_LOGGERS, logging_config, serve_logging_config
from tests.support.configs import base_document, make_config


def test_defaults() -> None:
    assert make_config().logging == LoggingSettings(format="text", level="info")


def test_keys_are_read() -> None:
    doc = base_document()
    doc["logging"] = {"format": "json", "level": "warning"}
    assert make_config(doc).logging == LoggingSettings(format="json", level="warning")


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"format": "xml"}, "logging.format: expected one of text, json"),
        ({"format": 1}, "logging.format: expected str"),
        ({"level": "trace"}, "logging.level: expected one of debug, info, warning, error"),
        ({"formatt": "json"}, "logging.formatt"),
    ],
)
def test_bad_values_are_reported_with_their_key_path(table: dict[str, object], problem: str) -> None:
    doc = base_document()
    doc["logging"] = table
    with pytest.raises(ConfigError) as info:
        make_config(doc)
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems


def test_the_command_line_level_wins() -> None:
    settings = LoggingSettings(format="json", level="warning")
    assert serve_logging_config(settings, None)["root"]["level"] == "WARNING"
    assert serve_logging_config(settings, "debug")["root"]["level"] == "DEBUG"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    saved_loggers = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate) for n in UVICORN_LOGGERS}
    yield
    logging.captureWarnings(False)  # the handler factory turned it on
    root.handlers[:], level = saved
    root.setLevel(level)
    for name, (handlers, propagate) in saved_loggers.items():
        logging.getLogger(name).handlers[:] = handlers
        logging.getLogger(name).propagate = propagate


@pytest.mark.usefixtures("restore_logging")
def test_uvicorns_loggers_write_json_lines_through_the_one_redacting_handler() -> None:
    # uvicorn's own configuration gives its loggers handlers of their own; bff's document must take them away.
    logging.getLogger("uvicorn.error").addHandler(logging.StreamHandler(io.StringIO()))
    logging.getLogger("uvicorn.access").propagate = False
    config = logging_config("json", "info")
    stream = io.StringIO()
    config["handlers"]["bff"]["stream"] = stream
    logging.config.dictConfig(config)
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 7, extra={"color_message": "\x1b[1m"})
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", "/bff/callback?code=abcdefghijklmnop&state=x", "1.1", 302
    )
    logging.getLogger("bff.test").warning("x", extra={"request_id": "r1", "http.response.status_code": 502})
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["logger"] for line in lines] == ["uvicorn.error", "uvicorn.access", "bff.test"]
    assert lines[0]["body"] == "Started server process [7]"
    assert "color_message" not in lines[0]
    assert "abcdefghijklmnop" not in lines[1]["body"]
    assert lines[2]["request_id"] == "r1"
    assert lines[2]["http.response.status_code"] == 502


@pytest.mark.usefixtures("restore_logging")
def test_python_warnings_are_written_by_the_same_handler() -> None:
    config = logging_config("json", "info")
    stream = io.StringIO()
    config["handlers"]["bff"]["stream"] = stream
    logging.config.dictConfig(config)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn_explicit("client_secret=abcdefghijklmnopq", UserWarning, "x.py", 1)
    (line,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert line["logger"] == "py.warnings"
    assert "abcdefghijklmnopq" not in line["body"]
