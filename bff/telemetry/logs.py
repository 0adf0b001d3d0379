"""Log lines for operators: one handler on the root logger, its records redacted, rendered as text or as JSON.

``logging_config(format, level)`` is the ``logging.config.dictConfig`` document ``bff serve`` hands to uvicorn as
``log_config``, so the supervisor and every worker process (which configures logging again after it starts) get the
same single handler: uvicorn's own loggers (``uvicorn``, ``uvicorn.error``, ``uvicorn.access``) lose their handlers
and propagate to it, and nothing bff writes reaches the stream any other way. ``configure_logging`` applies the same
document in-process (the demo, the reference IdP).

The handler's :class:`~bff.telemetry.redaction.RedactingFilter` runs before either formatter: the message, every
``extra=`` field and the exception text are masked and made JSON-safe there, so a formatter only renders.

JSON lines use the OpenTelemetry log data model's names: ``timestamp`` (RFC 3339, UTC), ``severity_text``, ``body``,
``logger``, every ``extra=`` field under its own key (``http.request.method``, ``request_id``, ``trace_id``, ...),
and ``exception.type`` / ``exception.message`` / ``exception.stacktrace`` (OTel semantic conventions for
exceptions). The core fields win over an ``extra=`` field of the same name. Non-ASCII is escaped, so a line is
always one line of valid JSON whatever the record held.
"""

from __future__ import annotations

import json
import logging
import logging.config
import time
from typing import Any, TextIO

from bff.config import LogFormat, LoggingSettings
from bff.telemetry.redaction import EXTRA_SKIP, RedactingFilter, extra_fields, redact

UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


_second: list[tuple[int, str]] = [(-1, "")]


def rfc3339(created: float) -> str:
    """RFC 3339 UTC with milliseconds; the date-and-second part is formatted once per second."""
    seconds = int(created)
    last, prefix = _second[0]
    if seconds != last:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _second[0] = (seconds, prefix)
    return f"{prefix}.{int((created - seconds) * 1000):03d}Z"


def _exception(record: logging.LogRecord, formatter: logging.Formatter) -> tuple[str, str, str] | None:
    if not record.exc_info or record.exc_info[1] is None:
        return None
    exc = record.exc_info[1]
    if not record.exc_text:
        record.exc_text = redact(formatter.formatException(record.exc_info))
    return type(exc).__qualname__, redact(str(exc)), record.exc_text


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring for the fields)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {key: value for key, value in extra_fields(record) if key not in EXTRA_SKIP}
        line["timestamp"] = rfc3339(record.created)
        line["severity_text"] = record.levelname
        line["body"] = record.getMessage()
        line["logger"] = record.name
        exception = _exception(record, self)
        if exception is not None:
            line["exception.type"], line["exception.message"], line["exception.stacktrace"] = exception
        if record.stack_info:
            line["code.stacktrace"] = redact(self.formatStack(record.stack_info))
        # default=str: a value the filter did not see (a filter-less handler) still renders.
        return json.dumps(line, ensure_ascii=True, allow_nan=False, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``time LEVEL logger message key=value ...`` with the ``extra=`` fields as JSON values."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        _exception(record, self)
        text = super().format(record)
        extras = [(k, v) for k, v in extra_fields(record) if k not in EXTRA_SKIP]
        if not extras:
            return text
        head, sep, tail = text.partition("\n")
        fields = " ".join(f"{key}={json.dumps(value, ensure_ascii=True, default=str)}" for key, value in extras)
        return f"{head} {fields}{sep}{tail}"


def stream_handler(stream: TextIO) -> logging.Handler:
    """The one handler; also routes Python warnings through logging (in every process that applies the document)."""
    # uvicorn's workers apply the dictConfig document and nothing else, so this is the one hook they all run.
    logging.captureWarnings(True)
    return logging.StreamHandler(stream)


def logging_config(format: LogFormat = "text", level: str = "info") -> dict[str, Any]:
    """The ``dictConfig`` document of bff's logging (``format``: text or json; ``level``: debug .. error)."""
    formatter = JsonFormatter if format == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactingFilter}},
        "formatters": {"bff": {"()": formatter}},
        "handlers": {
            "bff": {"()": stream_handler, "stream": "ext://sys.stderr", "formatter": "bff", "filters": ["redact"]}
        },
        "root": {"handlers": ["bff"], "level": level.upper()},
        # No level of their own: the root level governs every logger alike.
        "loggers": {name: {"handlers": [], "propagate": True, "level": "NOTSET"} for name in UVICORN_LOGGERS},
    }


def serve_logging_config(settings: LoggingSettings, level: str | None = None) -> dict[str, Any]:
    """``logging_config`` for ``bff serve``: the ``[logging]`` section, ``level`` (the command line's) winning."""
    return logging_config(settings.format, level or settings.level)


def configure_logging(level: str = "info", format: LogFormat = "text") -> None:
    """Install bff's logging in this process; Python warnings are logged (and so rendered) too."""
    logging.config.dictConfig(logging_config(format, level))
