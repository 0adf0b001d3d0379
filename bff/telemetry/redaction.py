"""Logging that never writes a credential.

``RedactingFilter`` sits on bff's one log handler, so it sees every record whatever logger produced it (ours,
uvicorn's access log, httpx's). Before any formatter runs it rewrites the record: the final message, every
``extra=`` field (recursively, and made JSON-safe: numbers and booleans kept, everything else a masked string) and
the exception text. bff's own code never passes a secret to a logger; this filter is the safety net for the rest.

What is masked (``redact``), failing closed: when in doubt, more text goes.

* credentials after an HTTP authentication scheme (``Bearer``, ``Basic``, ``DPoP``, ``Negotiate``;
  RFC 9110 section 11, RFC 6750, RFC 9449), up to the next space or quote;
* the whole value of ``Authorization``, ``Proxy-Authorization``, ``Cookie`` and ``Set-Cookie`` fields, written as
  ``name: value``, ``name=value``, JSON, or a Python tuple ``(b'cookie', b'...')``;
* any ``__Host-`` / ``__Secure-`` cookie's value (bff's session and login cookies carry these prefixes);
* anything shaped like a JWS or JWE compact serialisation (RFC 7515/7516: ``eyJ`` then dot-separated base64url);
* the value of a sensitive parameter (``*token``, ``*secret``, ``*assertion``, ``password``, ``code``,
  ``code_verifier``, ``state``, ``nonce``, ``id_token_hint``, ``api_key``) in a query string, a form body, JSON
  (also escaped inside another JSON string), a Python repr, or percent-encoded inside another parameter.

An ``extra=`` field whose own name is sensitive (the same names, plus the header names above) is masked whole.
A cheap search for any trigger word comes first, so a line with nothing to mask costs one scan.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping

REDACTED = "[REDACTED]"

# One scan of the lowercased text decides whether it can hold anything to mask; every pattern below needs one of
# these words (a case-sensitive search of a lowercased copy is several times faster than a case-insensitive one).
_TRIGGER = re.compile(
    r"bearer|basic|dpop|negotiate|token|eyj|secret|assertion|password|code|state|nonce|api_?key|cookie|"
    r"authorization|__host-|__secure-"
)
_QUOTE = r"(?:\\?[\"']|%22)"
_KEY = r"(?:[a-z_-]*(?:token|secret|assertion)|password|code|code_verifier|state|nonce|id_token_hint|api_?key)"
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # RFC 9110 section 11.4 credentials: a scheme, then the token68 or parameters.
    (re.compile(r"(?i)\b(bearer|basic|dpop|negotiate)\s+[^\s\"'\\]+"), r"\1 " + REDACTED),
    # JWS (3 parts) / JWE (5 parts) compact serialisations, wherever they start.
    (re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*)?"), REDACTED),
    # Whole header values: `name: value`, `name=value`, `"name": "value"`, `(b'name', b'value')`.
    (
        re.compile(
            r"(?i)\b((?:set-)?cookie|(?:proxy-)?authorization)"
            r"(" + _QUOTE + r"?\s*(?:[:=]|%3A|%3D|,\s*b?(?=[\"']))\s*" + _QUOTE + r"?)[^\"'\\\n]+"
        ),
        r"\1\2" + REDACTED,
    ),
    # Prefixed cookies (RFC 6265bis section 4.1.3) anywhere, e.g. a cookie string logged without its field name.
    (re.compile(r"(?i)(__(?:host|secure)-[^=\s;,\"']*=)[^;\s\"',&\\]+"), r"\1" + REDACTED),
    # Sensitive parameters; the key may follow a quote or a percent-escape (`%3Fcode%3D`), not a name's letter.
    (
        re.compile(
            r"(?i)(?:(?<![a-z_.-])|(?<=%3f)|(?<=%26)|(?<=%22))("
            + _KEY
            + _QUOTE
            + r"?\s*(?:[:=]|%3A|%3D)\s*"
            + _QUOTE
            + r"?)[^&\s\"'\\,;]+"
        ),
        r"\1" + REDACTED,
    ),
]
_SENSITIVE_KEY = re.compile(
    r"(?i)(?:[a-z_]*(?:token|secret|assertion)|password|code|code_verifier|state|nonce|id_token_hint|api_?key|"
    r"(?:set_)?cookie|(?:proxy_)?authorization)"
)
_MAX_DEPTH = 8
_KEY_CACHE: dict[str, bool] = {}
_KEY_CACHE_SIZE = 1024

_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
#: Extra fields a formatter leaves out: uvicorn's ANSI-coloured copy of its message.
EXTRA_SKIP = frozenset({"color_message"})


def redact(text: str) -> str:
    """``text`` with every credential-shaped part masked (see the module docstring)."""
    if _TRIGGER.search(text.lower()) is None:
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def sensitive_key(key: str) -> bool:
    """Whether a field named ``key`` (``http.request.header.cookie``, ``client_secret``) holds a credential."""
    known = _KEY_CACHE.get(key)
    if known is None:
        known = _SENSITIVE_KEY.fullmatch(key.rsplit(".", 1)[-1].replace("-", "_")) is not None
        if len(_KEY_CACHE) < _KEY_CACHE_SIZE:  # field names come from code: a small set, bounded all the same
            _KEY_CACHE[key] = known
    return known


def redact_value(value: object, depth: int = 0) -> object:
    """A JSON-safe, redacted copy of a log field's value."""
    if type(value) is str:
        return redact(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bytes | bytearray):
        return redact(bytes(value).decode("utf-8", "replace"))
    if depth >= _MAX_DEPTH:
        return REDACTED
    if isinstance(value, Mapping):
        return {
            str(k): REDACTED if sensitive_key(str(k)) and v is not None else redact_value(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v, depth + 1) for v in value]
    try:
        return redact(str(value))
    except Exception:  # noqa: BLE001 - a value's own __str__ failing must not lose the log line
        return f"<unprintable {type(value).__name__}>"


def extra_fields(record: logging.LogRecord) -> list[tuple[str, object]]:
    """The ``extra=`` fields of ``record`` (its attributes that ``LogRecord`` itself does not define)."""
    return [(key, value) for key, value in record.__dict__.items() if key not in _STANDARD]


class RedactingFilter(logging.Filter):
    """Masks the message, the ``extra=`` fields and the exception text of every record; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed log call (or a failing __str__): keep what we can, safely
            message = str(record.msg)
        redacted = redact(message)
        if redacted != message or record.args:
            record.msg = redacted
            record.args = None
        for key, value in extra_fields(record):
            if key in EXTRA_SKIP:
                continue
            record.__dict__[key] = REDACTED if sensitive_key(key) and value is not None else redact_value(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
