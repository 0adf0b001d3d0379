"""The access log: one line per request on stdout, JSON (``[logging] format = "json"``) or compact text.

Cheap by construction: every field is one bff controls (numbers, the configured route, a validated request id, a
hex handle) or is escaped here (the method, the path: ``json.encoder.encode_basestring_ascii``, the C escaper, so a
hostile path of any bytes still gives one line of valid ASCII JSON). So the generic redaction filter, which scans
whole messages with regular expressions, is not on this path. The query string is never written: its values are
where secrets travel. A request's end keeps a tuple of plain values (a ``Record``); the lines are formatted in one
loop and written together ``FLUSH_DELAY`` after the first of them (or at ``FLUSH_LINES``, and at exit): a write per
request would cost more than the rest of the line.

The session appears only as a handle: the first 12 characters of its store key, itself SHA-256 of the 256-bit
session id (``bff.session.manager``), the same handle ``bff sessions list`` shows; it cannot be turned back into the
id or a cookie.
"""

from __future__ import annotations

import asyncio
import atexit
import sys
from collections.abc import Callable
from json.encoder import encode_basestring_ascii
from math import floor
from time import gmtime, perf_counter, strftime, time
from typing import TextIO

from bff.telemetry.exchange import BaseObserver, Exchange

#: Seconds a line may wait in the buffer: one write (a system call) then carries every line of that time.
FLUSH_DELAY = 0.05
#: A burst is written at least every this many lines.
FLUSH_LINES = 256

_escape: Callable[[str], str] = encode_basestring_ascii


def session_handle(session_key: str | None) -> str | None:
    return None if session_key is None else session_key.rpartition(":")[2][:12]


#: At most this many (route, method, status, upstream status, error) fragments are kept: routes, standard methods,
#: statuses and error codes are closed sets in practice; a client inventing methods must not grow memory.
MAX_FRAGMENTS = 4096
#: At most this many escaped paths of at most MAX_CACHED_PATH bytes are kept: an SPA calls the same API paths again
#: and again; new paths past the bound are escaped each time, never stored.
MAX_PATHS = 1024
MAX_CACHED_PATH = 256
#: ``.000`` to ``.999``: the fraction of a millisecond count, looked up rather than formatted with a ``03d`` spec.
_FRACTION = tuple(f".{i:03d}" for i in range(1000))
#: ``0`` to ``999`` as text: a tuple index costs a fraction of formatting an int in an f-string (durations in whole
#: milliseconds and body sizes, never negative, are mostly below 1000).
_DECIMAL = tuple(str(i) for i in range(1000))
_NO_TRACE = '"trace_id":null,"span_id":null,'
_HEAD = '"severity_text":"INFO","body":"access","logger":"bff.access",'


#: What a line shows, kept at the request's end and formatted at the flush: the end and start (``perf_counter()``),
#: route, method, status, upstream status, error, raw path, request id, trace id, span id, session key, upstream
#: error, upstream time, bytes in and out. Plain values only: nothing that refers back to the request.
Record = tuple[
    float, float, str, str, int, int | None, str | None, bytes, str | None, str | None, str | None, str | None,
    str | None, float, int, int,
]  # fmt: skip


class AccessLog(BaseObserver):
    """Observer writing one access line per request (see the module docstring)."""

    def __init__(self, *, json: bool, stream: TextIO | None = None) -> None:
        self._format = self._json_lines if json else self._text_lines
        self._stream = stream
        self._records: list[Record] = []
        self._scheduled = False
        self._escaped: dict[str, str] = {}
        self._fragments: dict[tuple[str, str, int, int | None, str | None], str] = {}
        self._paths: dict[bytes, str] = {}
        self._session_key: str | None = None
        self._session = "null"
        self._second = -1
        self._prefix = ""
        self._next_ms = float("-inf")
        self._stamp = ""
        self._head = ""
        #: time() - perf_counter(), re-read once per second: one clock read per request gives both the duration and
        #: the wall-clock timestamp, and a stepped wall clock is followed within a second.
        self._offset = time() - perf_counter()
        atexit.register(self.flush)  # a process that stops without its lifespan end still writes its last lines

    def end(self, exchange: Exchange) -> None:
        self.record(exchange, perf_counter())

    def record(self, ex: Exchange, now: float) -> None:
        """Keep what the line of ``ex`` (ended at ``now``, a ``perf_counter()``) shows; it is formatted at the flush."""
        self._records.append(
            (
                now,
                ex.started,
                ex.route,
                ex.method,
                ex.status,
                ex.upstream_status,
                ex.error,
                ex.path,
                ex.request_id,
                ex.trace_id,
                ex.span_id,
                ex.session_key,
                ex.upstream_error,
                ex.upstream_time,
                ex.bytes_in,
                ex.bytes_out,
            )
        )
        if len(self._records) >= FLUSH_LINES:
            self.flush()
        elif not self._scheduled:
            try:
                asyncio.get_running_loop().call_later(FLUSH_DELAY, self.flush)
                self._scheduled = True
            except RuntimeError:  # no loop (a synchronous caller): write now
                self.flush()

    def render(self) -> str:
        """The lines of the records kept since the last flush, which are let go."""
        records, self._records = self._records, []
        return self._format(records)

    def flush(self) -> None:
        self._scheduled = False
        if not self._records:
            return
        text = self.render()
        stream = self._stream or sys.stdout
        try:
            binary = getattr(stream, "buffer", None)
            if binary is not None:  # the lines are ASCII: bytes straight to the buffer skip the text layer's encoder
                stream.flush()
                binary.write(text.encode("ascii", "backslashreplace"))
                binary.flush()
            else:
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

    def _timestamp(self, now: float) -> str:
        """RFC 3339 UTC with milliseconds of ``now`` (a ``perf_counter()``), formatted once per millisecond (the date
        and second once per second): it holds until ``self._next_ms``. ``self._head`` is the JSON line's start up to
        its first per-request field."""
        ms = int((now + self._offset) * 1000)
        second = ms // 1000
        if second != self._second:
            self._offset = time() - perf_counter()
            ms = int((now + self._offset) * 1000)
            second = ms // 1000
            self._second, self._prefix = second, strftime("%Y-%m-%dT%H:%M:%S", gmtime(second))
        self._stamp = f"{self._prefix}{_FRACTION[ms % 1000]}Z"
        self._head = f'{{"timestamp":"{self._stamp}",{_HEAD}'
        self._next_ms = (ms + 1) / 1000 - self._offset
        return self._stamp

    def _escaped_path(self, path: bytes) -> str:
        escaped = _escape(path.decode("utf-8", "backslashreplace"))
        if len(path) <= MAX_CACHED_PATH and len(self._paths) < MAX_PATHS:
            self._paths[path] = escaped
        return escaped

    def _fragment(self, key: tuple[str, str, int, int | None, str | None]) -> str:
        """The fields one (route, method, status, upstream status, error) always gives, as JSON members."""
        route, method, status, upstream, error = key
        fragment = (
            f'"http.route":{_escape(route)},"http.request.method":{_escape(method)},'
            f'"http.response.status_code":{status},'
            f'"bff.upstream.status_code":{"null" if upstream is None else upstream},'
            f'"bff.error":{"null" if error is None else _escape(error)},'
        )
        if len(self._fragments) < MAX_FRAGMENTS:
            self._fragments[key] = fragment
        return fragment

    def _json_lines(self, records: list[Record]) -> str:
        # One loop over the batch, inline on purpose (no helper per field or line): what a (route, method, status,
        # upstream status, error) always gives is rendered once and kept; request_id is a validated token or None,
        # session keys are base64url: neither needs escaping. Durations are milliseconds with microsecond precision
        # (the log convention's unit), rendered from whole microseconds: integer formatting costs a fraction of a
        # fixed-point float's.
        fragments, paths = self._fragments, self._paths
        lines = []
        for (
            now, started, route, method, status, upstream, error, path, request_id,
            trace_id, span_id, session, up_error, up_time, bytes_in, bytes_out,
        ) in records:  # fmt: skip
            fragment = fragments.get((route, method, status, upstream, error)) or self._fragment(
                (route, method, status, upstream, error)
            )
            if now >= self._next_ms:
                self._timestamp(now)
            escaped = paths.get(path) or self._escaped_path(path)
            if trace_id is None and span_id is None:
                trace = _NO_TRACE
            else:
                trace = (
                    f'"trace_id":{"null" if trace_id is None else _escape(trace_id)},'
                    f'"span_id":{"null" if span_id is None else _escape(span_id)},'
                )
            if session != self._session_key:
                self._session_key = session
                self._session = "null" if session is None else f'"{session.rpartition(":")[2][:12]}"'
            us = floor((now - started) * 1e6)  # floor, not int(): the same for durations, a cheaper call
            ms = us // 1000
            if upstream is None and up_error is None:  # no upstream call
                up_ms = "null"
            else:
                up_us = floor(up_time * 1e6)
                up = up_us // 1000
                up_ms = f"{_DECIMAL[up] if up < 1000 else up}{_FRACTION[up_us % 1000]}"
            rid = "null" if request_id is None else '"' + request_id + '"'
            lines.append(
                f'{self._head}"request_id":{rid},{trace}"url.path":{escaped},{fragment}'
                f'"duration_ms":{_DECIMAL[ms] if ms < 1000 else ms}{_FRACTION[us % 1000]},'
                f'"bff.upstream.duration_ms":{up_ms},'
                f'"http.request.body.size":{_DECIMAL[bytes_in] if bytes_in < 1000 else bytes_in},'
                f'"http.response.body.size":{_DECIMAL[bytes_out] if bytes_out < 1000 else bytes_out},'
                f'"bff.session":{self._session}}}\n'
            )
        return "".join(lines)

    def _text_lines(self, records: list[Record]) -> str:
        lines = []
        for (
            now, started, route, method, status, upstream, error, path, request_id,
            trace_id, _, session, _, up_time, bytes_in, bytes_out,
        ) in records:  # fmt: skip
            stamp = self._stamp if now < self._next_ms else self._timestamp(now)
            lines.append(
                f"{stamp} INFO bff.access {self._cached(method)} "
                f"{_escape(path.decode('utf-8', 'backslashreplace'))} {status}"
                f" route={self._cached(route)} upstream={'-' if upstream is None else upstream}"
                f" duration_ms={(now - started) * 1000:.3f} upstream_ms={up_time * 1000:.3f}"
                f" in={bytes_in} out={bytes_out} error={error or '-'} request_id={request_id or '-'}"
                f" trace_id={'-' if trace_id is None else _escape(trace_id)}"
                f" session={session_handle(session) or '-'}\n"
            )
        return "".join(lines)
