"""The access log: one line per request on stdout, JSON (``[logging] format = "json"``) or compact text.

Cheap by construction: every field is one bff controls (numbers, the configured route, a validated request id, a
hex handle) or is escaped here (the method, the path: ``json.encoder.encode_basestring_ascii``, the C escaper, so a
hostile path of any bytes still gives one line of valid ASCII JSON). So the generic redaction filter, which scans
whole messages with regular expressions, is not on this path. The query string is never written: its values are
where secrets travel. Lines are buffered and written together ``FLUSH_DELAY`` after the first of them (or at
``FLUSH_LINES``, and at exit): a write per request would cost more than the rest of the line.

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
_NO_TRACE = '"trace_id":null,"span_id":null,'
_HEAD = '"severity_text":"INFO","body":"access","logger":"bff.access",'


def _ms(us: int) -> str:
    """Whole microseconds as a JSON number of milliseconds (``1234`` -> ``1.234``)."""
    return f"{us // 1000}.{us % 1000:03d}"


class AccessLog(BaseObserver):
    """Observer writing one access line per request (see the module docstring)."""

    def __init__(self, *, json: bool, stream: TextIO | None = None) -> None:
        self._format = self._json_line if json else self._text_line
        self._stream = stream
        self._lines: list[str] = []
        self._scheduled = False
        self._escaped: dict[str, str] = {}
        self._fragments: dict[tuple[str, str, int, int | None, str | None], str] = {}
        self._paths: dict[bytes, str] = {}
        self._session_key: str | None = None
        self._session = "null"
        self._second = -1
        self._prefix = ""
        self._ms = -1
        self._stamp = ""
        self._head = ""
        #: time() - perf_counter(), re-read once per second: one clock read per request gives both the duration and
        #: the wall-clock timestamp, and a stepped wall clock is followed within a second.
        self._offset = time() - perf_counter()
        atexit.register(self.flush)  # a process that stops without its lifespan end still writes its last lines

    def end(self, exchange: Exchange) -> None:
        self._lines.append(self._format(exchange, perf_counter()))
        if len(self._lines) >= FLUSH_LINES:
            self.flush()
        elif not self._scheduled:
            try:
                asyncio.get_running_loop().call_later(FLUSH_DELAY, self.flush)
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

    @staticmethod
    def _path(exchange: Exchange) -> str:
        return _escape(exchange.path.decode("utf-8", "backslashreplace"))

    def _timestamp(self, now: float) -> str:
        """RFC 3339 UTC with milliseconds of ``now`` (a ``perf_counter()``), formatted once per millisecond (the date
        and second once per second); ``self._head`` is the JSON line's start up to its first per-request field."""
        ms = int((now + self._offset) * 1000)
        if ms != self._ms:
            second = ms // 1000
            if second != self._second:
                self._offset = time() - perf_counter()
                ms = int((now + self._offset) * 1000)
                second = ms // 1000
                self._second, self._prefix = second, strftime("%Y-%m-%dT%H:%M:%S", gmtime(second))
            self._ms, self._stamp = ms, f"{self._prefix}.{ms % 1000:03d}Z"
            self._head = f'{{"timestamp":"{self._stamp}",{_HEAD}'
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

    def _json_line(self, ex: Exchange, now: float) -> str:
        # Inline on purpose (no helper per field): this runs once per request. What a (route, method, status,
        # upstream status, error) always gives is rendered once; request_id is a validated token or None, session
        # keys are base64url: neither needs escaping.
        key = (ex.route, ex.method, ex.status, ex.upstream_status, ex.error)
        fragment = self._fragments.get(key) or self._fragment(key)
        if int((now + self._offset) * 1000) != self._ms:
            self._timestamp(now)
        path = self._paths.get(ex.path) or self._escaped_path(ex.path)
        trace_id, span_id = ex.trace_id, ex.span_id
        if trace_id is None and span_id is None:
            trace = _NO_TRACE
        else:
            trace = (
                f'"trace_id":{"null" if trace_id is None else _escape(trace_id)},'
                f'"span_id":{"null" if span_id is None else _escape(span_id)},'
            )
        session = ex.session_key
        if session != self._session_key:
            self._session_key = session
            self._session = "null" if session is None else f'"{session.rpartition(":")[2][:12]}"'
        # Milliseconds with microsecond precision (the log convention's unit), rendered from whole microseconds:
        # integer formatting costs a fraction of a fixed-point float's.
        if ex.upstream_status is None and ex.upstream_error is None:
            up_ms = "null"
        else:
            up_ms = _ms(int(ex.upstream_time * 1e6))
        request_id = "null" if ex.request_id is None else '"' + ex.request_id + '"'
        return (
            f'{self._head}"request_id":{request_id},{trace}'
            f'"url.path":{path},{fragment}'
            f'"duration_ms":{_ms(int((now - ex.started) * 1e6))},"bff.upstream.duration_ms":{up_ms},'
            f'"http.request.body.size":{ex.bytes_in},"http.response.body.size":{ex.bytes_out},'
            f'"bff.session":{self._session}}}\n'
        )

    def _text_line(self, ex: Exchange, now: float) -> str:
        upstream = "-" if ex.upstream_status is None else str(ex.upstream_status)
        return (
            f"{self._timestamp(now)} INFO bff.access {self._cached(ex.method)} {self._path(ex)} {ex.status}"
            f" route={self._cached(ex.route)} upstream={upstream} duration_ms={(now - ex.started) * 1000:.3f}"
            f" upstream_ms={ex.upstream_time * 1000:.3f} in={ex.bytes_in} out={ex.bytes_out}"
            f" error={ex.error or '-'} request_id={ex.request_id or '-'}"
            f" trace_id={'-' if ex.trace_id is None else _escape(ex.trace_id)}"
            f" session={session_handle(ex.session_key) or '-'}\n"
        )
