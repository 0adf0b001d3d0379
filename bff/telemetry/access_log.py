"""The access log: one line per request on stdout, JSON (``[logging] format = "json"``) or compact text.

Cheap by construction: every field is one bff controls (numbers, the configured route, a validated request id, a
hex handle) or is escaped here (the method, the path: ``json.encoder.encode_basestring_ascii``, the C escaper, so a
hostile path of any bytes still gives one line of valid ASCII JSON). So the generic redaction filter, which scans
whole messages with regular expressions, is not on this path. The query string is never written: its values are
where secrets travel. Each request's line is formatted at its end; the lines are written together ``FLUSH_DELAY``
after the first of them (or at ``FLUSH_LINES``, and at exit): a write per request would cost more than the line.

The session appears only as a handle: the first 12 characters of its store key, itself SHA-256 of the 256-bit
session id (``bff.session.manager``), the same handle ``bff sessions list`` shows; it cannot be turned back into the
id or a cookie.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
from collections.abc import Callable
from json.encoder import encode_basestring_ascii
from math import floor
from time import gmtime, perf_counter, strftime, time
from typing import TextIO

from bff.telemetry.exchange import BaseObserver, Exchange
from bff.telemetry.http_metrics import HttpMetrics, last_call
from bff.telemetry.metrics import HistogramChild, fold_pending

logger = logging.getLogger(__name__)

#: Seconds a line may wait in the buffer: one write (a system call) then carries every line of that time.
FLUSH_DELAY = 0.05
#: A burst is written at least every this many lines.
FLUSH_LINES = 256

_escape: Callable[[str], str] = encode_basestring_ascii


def session_handle(session_key: str | None) -> str | None:
    return None if session_key is None else session_key.rpartition(":")[2][:12]


#: At most this many fragments (a route, method, status, upstream status, error and path) are kept, for paths of at
#: most MAX_CACHED_PATH bytes: an SPA calls the same API paths again and again; past the bound (a client inventing
#: paths or methods must not grow memory) a line's fragment is rendered each time, never stored.
MAX_FRAGMENTS = 4096
MAX_CACHED_PATH = 256
#: ``.000`` to ``.999``: the fraction of a millisecond count, looked up rather than formatted with a ``03d`` spec.
_FRACTION = tuple(f".{i:03d}" for i in range(1000))
#: ``0`` to ``999`` as text: a tuple index costs a fraction of formatting an int in an f-string (durations in whole
#: milliseconds and body sizes, never negative, are mostly below 1000).
_DECIMAL = tuple(str(i) for i in range(1000))
#: A fragment: the JSON members a (route, method, status, upstream status, error, path) always gives, and (with
#: metrics) the histograms of its request duration and of its upstream call (None without metrics, or from 400 up).
Fragment = tuple[str, HistogramChild | None, HistogramChild | None]
FragmentKey = tuple[str, str, int, int | None, str | None, bytes]
_NO_TRACE = '"trace_id":null,"span_id":null,'
_HEAD = '"severity_text":"INFO","body":"access","logger":"bff.access",'


class AccessLog(BaseObserver):
    """Observer writing one access line per request (see the module docstring).

    After ``observe_durations`` (the fused built-in observer), its ``end`` also observes the request duration
    (``http_server_request_duration_seconds``): the fragment a line's fixed fields come from names the histogram too.
    """

    def __init__(self, *, json: bool, stream: TextIO | None = None) -> None:
        self.end = self._json_end if json else self._text_end  # type: ignore[method-assign,assignment]
        self._stream = stream
        self._metrics: HttpMetrics | None = None
        self._lines: list[str] = []
        self._scheduled = False
        self._escaped: dict[str, str] = {}
        self._fragments: dict[FragmentKey, Fragment] = {}
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

    def observe_durations(self, metrics: HttpMetrics) -> None:
        """From now on, ``end`` also observes each request's duration in ``metrics``."""
        self._metrics = metrics
        self._fragments.clear()

    def _keep(self, line: str) -> None:
        lines = self._lines
        lines.append(line)
        if len(lines) >= FLUSH_LINES:
            self.flush()
        elif not self._scheduled:
            self._schedule()

    def _schedule(self) -> None:
        try:
            asyncio.get_running_loop().call_later(FLUSH_DELAY, self.flush)
            self._scheduled = True
        except RuntimeError:  # no loop (a synchronous caller): write now
            self.flush()

    def render(self) -> str:
        """The lines kept since the last flush, which are let go."""
        lines, self._lines = self._lines, []
        return "".join(lines)

    def flush(self) -> None:
        self._scheduled = False
        if self._metrics is not None:
            fold_pending()
        if not self._lines:
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

    def _fragment(self, key: FragmentKey, server_address: str) -> Fragment:
        """The fields one (route, method, status, upstream status, error, path) always gives, as JSON members, and,
        with metrics, the request-duration histogram of that route, method and status and the upstream-call histogram
        of an upstream status below 400."""
        route, method, status, upstream, error, path = key
        text = (
            f'"url.path":{_escape(path.decode("utf-8", "backslashreplace"))},'
            f'"http.route":{_escape(route)},"http.request.method":{_escape(method)},'
            f'"http.response.status_code":{status},'
            f'"bff.upstream.status_code":{"null" if upstream is None else upstream},'
            f'"bff.error":{"null" if error is None else _escape(error)},'
        )
        if self._metrics is None:
            fragment: Fragment = (text, None, None)
        else:
            # The exchange's last upstream call (``last_call``) is observed here, not at its answer
            # (``bff.telemetry.builtin``). A route's label names one upstream, so one address.
            client = None
            if upstream is not None and last_call(upstream):
                client = self._metrics.client_child(server_address, method, route, upstream)
            fragment = (text, self._metrics.server_child(route, method, status), client)
        if len(path) <= MAX_CACHED_PATH and len(self._fragments) < MAX_FRAGMENTS:
            self._fragments[key] = fragment
        return fragment

    def _json_end(self, ex: Exchange) -> None:
        # Inline on purpose (no helper per field): what a (route, method, status, upstream status, error, path) always
        # gives is rendered once and kept; request_id is a validated token or None, session keys are base64url: neither
        # needs escaping. Durations are milliseconds with microsecond precision (the log convention's unit), rendered
        # from whole microseconds: integer formatting costs a fraction of a fixed-point float's. Guards itself: the
        # fused observer's ``end`` is this one.
        try:
            now = perf_counter()
            key = (ex.route, ex.method, ex.status, ex.upstream_status, ex.error, ex.path)
            text, histogram, client = self._fragments.get(key) or self._fragment(key, ex.server_address)
            seconds = now - ex.started
            if histogram is not None:  # counted at the flush, a batch at a time (HistogramChild)
                histogram.pending.append(seconds)
                if client is not None:
                    client.pending.append(ex.upstream_duration)
            if now >= self._next_ms:
                self._timestamp(now)
            trace_id = ex.trace_id
            if trace_id is None:  # set together with span_id, by the tracing observer
                trace = _NO_TRACE
            else:
                span_id = ex.span_id
                trace = f'"trace_id":{_escape(trace_id)},"span_id":{"null" if span_id is None else _escape(span_id)},'
            session = ex.session_key
            if session != self._session_key:
                self._session_key = session
                self._session = "null" if session is None else f'"{session.rpartition(":")[2][:12]}"'
            us = floor(seconds * 1e6)  # floor, not int(): the same for durations, a cheaper call
            ms = us // 1000
            if ex.upstream_status is None and ex.upstream_error is None:  # no upstream call
                up_ms = "null"
            else:
                up_us = floor(ex.upstream_time * 1e6)
                up = up_us // 1000
                up_ms = f"{_DECIMAL[up] if up < 1000 else up}{_FRACTION[up_us % 1000]}"
            request_id, bytes_in, bytes_out = ex.request_id, ex.bytes_in, ex.bytes_out
            rid = "null" if request_id is None else f'"{request_id}"'
            lines = self._lines
            lines.append(
                f'{self._head}"request_id":{rid},{trace}{text}'
                f'"duration_ms":{_DECIMAL[ms] if ms < 1000 else ms}{_FRACTION[us % 1000]},'
                f'"bff.upstream.duration_ms":{up_ms},'
                f'"http.request.body.size":{_DECIMAL[bytes_in] if bytes_in < 1000 else bytes_in},'
                f'"http.response.body.size":{_DECIMAL[bytes_out] if bytes_out < 1000 else bytes_out},'
                f'"bff.session":{self._session}}}\n'
            )
            if len(lines) >= FLUSH_LINES:  # _keep, inline
                self.flush()
            elif not self._scheduled:
                self._schedule()
        except Exception:
            logger.exception("the access log failed at the request end")

    def _text_end(self, ex: Exchange) -> None:
        try:
            now = perf_counter()
            if self._metrics is not None:
                self._metrics.record_with_last_call(ex, now)
            stamp = self._stamp if now < self._next_ms else self._timestamp(now)
            upstream, request_id, trace_id = ex.upstream_status, ex.request_id, ex.trace_id
            self._keep(
                f"{stamp} INFO bff.access {self._cached(ex.method)} "
                f"{_escape(ex.path.decode('utf-8', 'backslashreplace'))} {ex.status}"
                f" route={self._cached(ex.route)} upstream={'-' if upstream is None else upstream}"
                f" duration_ms={(now - ex.started) * 1000:.3f} upstream_ms={ex.upstream_time * 1000:.3f}"
                f" in={ex.bytes_in} out={ex.bytes_out} error={ex.error or '-'} request_id={request_id or '-'}"
                f" trace_id={'-' if trace_id is None else _escape(trace_id)}"
                f" session={session_handle(ex.session_key) or '-'}\n"
            )
        except Exception:
            logger.exception("the access log failed at the request end")
