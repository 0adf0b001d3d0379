"""Logging that never writes a credential (STYLE 13).

``RedactingFilter`` rewrites every record's final message, whatever logger produced it (ours, uvicorn's access log,
httpx's), masking bearer tokens, JWTs, and the values of sensitive query/form parameters and headers. bff's own
code also never passes a secret to a logger; this filter is the safety net for the rest.
"""

from __future__ import annotations

import logging
import re

_PATTERNS = [
    # Authorization: Bearer xxx / Basic xxx
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/]+=*"), r"\1 [REDACTED]"),
    # Anything shaped like a JWS/JWE compact serialisation.
    (
        re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*)?"),
        "[REDACTED-JWT]",
    ),
    # Sensitive parameters in URLs, form bodies and JSON.
    (
        re.compile(
            r"(?i)([\"']?\b(?:access_token|refresh_token|id_token|id_token_hint|logout_token|code|code_verifier|"
            r"client_secret|client_assertion|password|state|nonce|token)[\"']?\s*[=:]\s*[\"']?)[^&\s\"',;]+"
        ),
        r"\1[REDACTED]",
    ),
    # Cookie and Set-Cookie header values.
    (re.compile(r"(?i)\b((?:set-)?cookie[\"']?\s*[:=]\s*[\"']?)[^\"'\n]+"), r"\1[REDACTED]"),
]


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed log call: keep what we can, safely
            message = str(record.msg)
        redacted = redact(message)
        if redacted != message or record.args:
            record.msg = redacted
            record.args = None
        return True


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr with the redacting filter on the handler, so every logger's records pass through it."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
