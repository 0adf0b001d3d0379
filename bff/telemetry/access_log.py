"""The access log: one line per request on stdout, JSON (``[logging] format = "json"``) or compact text.

Cheap by construction: every field is one bff controls (numbers, the configured route, a validated request id, a
hex handle) or is escaped here (the method, the path: ``json.encoder.encode_basestring_ascii``, the C escaper, so a
hostile path of any bytes still gives one line of valid ASCII JSON). So the generic redaction filter, which scans
whole messages with regular expressions, is not on this path. The query string is never written: its values are
where secrets travel. Lines are buffered and written once per event-loop turn (or at ``FLUSH_LINES``).

The session appears only as a handle: the first 12 characters of its store key, itself SHA-256 of the 256-bit
session id (``bff.session.manager``), the same handle ``bff sessions list`` shows; it cannot be turned back into the
id or a cookie.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from json.encoder import encode_basestring_ascii
from time import perf_counter, time
from typing import TextIO

from bff.telemetry.exchange import Exchange
from bff.telemetry.logs import rfc3339

#: A burst writes at least this often even within one loop turn.
FLUSH_LINES = 256

_escape: Callable[[str], str] = encode_basestring_ascii


def _json_or_null(value: str | None) -> str:
    return "null" if value is None else _escape(value)


def _int_or_null(value: int | None) -> str:
    return "null" if value is None else str(value)


def session_handle(session_key: str | None) -> str | None:
    return None if session_key is None else session_key.rpartition(":")[2][:12]


class AccessLog:
    """Observer writing one access line per request (see the module docstring)."""

    def __init__(self, *, json: bool, stream: TextIO | None = None) -> None:
        self._format = self._json_line if json else self._text_line
        self._stream = stream
        self._lines: list[str] = []
        self._scheduled = False
        self._escaped: dict[str, str] = {}

    def start(self, exchange: Exchange) -> None:
        pass

    def upstream(self, exchange: Exchange) -> None:
        pass

    def end(self, exchange: Exchange) -> None:
        self._lines.append(self._format(exchange, perf_counter() - exchange.started))
        if len(self._lines) >= FLUSH_LINES:
            self.flush()
        elif not self._scheduled:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
                self._scheduled = True
            except RuntimeError:  # no loop (a synchronous caller): write now
                self.flush()

    def flush(self) -> None:
        self._scheduled = False
        if not self._lines:
            return
        text = "".join(self._lines)
        self._lines.clear()
        stream = self._stream or sys.stdout
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):  # stdout closed or gone: the access log must never fail a request
            pass

    def _cached(self, value: str) -> str:
        escaped = self._escaped.get(value)
        if escaped is None:
            escaped = _escape(value)
            if len(self._escaped) < 1024:  # routes and standard methods: a closed set in practice
                self._escaped[value] = escaped
        return escaped

    @staticmethod
    def _path(exchange: Exchange) -> str:
        return _escape(exchange.path.decode("utf-8", "backslashreplace"))

    def _json_line(self, ex: Exchange, elapsed: float) -> str:
        upstream_ms = (
            f"{ex.upstream_time * 1000:.3f}" if ex.upstream_status is not None or ex.upstream_error else "null"
        )
        return (
            f'{{"timestamp":"{rfc3339(time())}","severity_text":"INFO","body":"access","logger":"bff.access",'
            f'"request_id":{_json_or_null(ex.request_id)},"trace_id":{_json_or_null(ex.trace_id)},'
            f'"span_id":{_json_or_null(ex.span_id)},"http.route":{self._cached(ex.route)},'
            f'"http.request.method":{self._cached(ex.method)},"url.path":{self._path(ex)},'
            f'"http.response.status_code":{ex.status},"bff.upstream.status_code":{_int_or_null(ex.upstream_status)},'
            f'"duration_ms":{elapsed * 1000:.3f},"bff.upstream.duration_ms":{upstream_ms},'
            f'"http.request.body.size":{ex.bytes_in},"http.response.body.size":{ex.bytes_out},'
            f'"bff.error":{_json_or_null(ex.error)},"bff.session":{_json_or_null(session_handle(ex.session_key))}}}\n'
        )

    def _text_line(self, ex: Exchange, elapsed: float) -> str:
        upstream = "-" if ex.upstream_status is None else str(ex.upstream_status)
        return (
            f"{rfc3339(time())} INFO bff.access {self._cached(ex.method)} {self._path(ex)} {ex.status}"
            f" route={self._cached(ex.route)} upstream={upstream} duration_ms={elapsed * 1000:.3f}"
            f" upstream_ms={ex.upstream_time * 1000:.3f} in={ex.bytes_in} out={ex.bytes_out}"
            f" error={ex.error or '-'} request_id={ex.request_id or '-'} trace_id={ex.trace_id or '-'}"
            f" session={session_handle(ex.session_key) or '-'}\n"
        )
