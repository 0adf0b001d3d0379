"""``[logging]``: how bff writes its log lines (text or JSON) and from which severity on."""

from __future__ import annotations

from bff.config.reader import Reader, table
from bff.config.settings import LOG_FORMATS, LOG_LEVELS, LoggingSettings


def read_logging(root: Reader) -> LoggingSettings:
    r = table(root, "logging", LoggingSettings)
    format = r.choice("format", LOG_FORMATS)
    level = r.choice("level", LOG_LEVELS)
    r.finish()
    return LoggingSettings(format=format, level=level)
