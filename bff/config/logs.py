"""``[logging]``: how bff writes its log lines (text or JSON), from which severity on, and the access log."""

from __future__ import annotations

from bff.config.reader import Reader, table
from bff.config.settings import LoggingSettings
from bff.config.values import LOG_FORMATS, LOG_LEVELS


def read_logging(root: Reader) -> LoggingSettings:
    r = table(root, "logging", LoggingSettings)
    format = r.choice("format", LOG_FORMATS)
    level = r.choice("level", LOG_LEVELS)
    access_log = r.get("access_log", bool)
    r.finish()
    return LoggingSettings(format=format, level=level, access_log=access_log)
