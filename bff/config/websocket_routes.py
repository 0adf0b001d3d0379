"""The WebSocket keys of a ``[[routes]]`` table: ``websocket``, ``max_message``, ``idle_timeout``, ``session_check``."""

from __future__ import annotations

from dataclasses import dataclass

from bff.config.reader import Reader, parse_duration, parse_size

#: The WebSocket limits, meaningful only on a ``websocket = true`` route.
_LIMITS = ("max_message", "idle_timeout", "session_check")
#: RFC 6455 5.2 allows 2^63-byte messages; bff keeps each whole in memory, so a cap keeps one socket from taking it.
MAX_MESSAGE_CEILING = 64 * 1024 * 1024
#: Below this the session checks cost more than they protect (one store read per socket per interval).
MIN_SESSION_CHECK = 0.1


@dataclass(frozen=True, slots=True)
class WebSocketKeys:
    websocket: bool
    max_message: int
    idle_timeout: float
    session_check: float


def read_websocket_keys(r: Reader, *, proxy: str | None) -> WebSocketKeys:
    websocket = r.get("websocket", bool)
    max_message = r.converted("max_message", parse_size)
    idle_timeout = r.converted("idle_timeout", parse_duration)
    session_check = r.converted("session_check", parse_duration)
    if not websocket:
        for name in _LIMITS:
            if name in r.data:
                r.problem(name, "applies only to a route with websocket = true")
        return WebSocketKeys(websocket, max_message, idle_timeout, session_check)
    if "max_message" in r.data and not 1 <= max_message <= MAX_MESSAGE_CEILING:
        r.problem("max_message", "must be between 1 byte and 64MiB")
    if "idle_timeout" in r.data and idle_timeout <= 0:
        r.problem("idle_timeout", "must be longer than 0s (a socket needs some time between messages)")
    if "session_check" in r.data and not MIN_SESSION_CHECK <= session_check <= 60:
        r.problem("session_check", "must be between 100ms and 60s")
    if proxy:
        r.problem("proxy", "a websocket route connects directly; a forward proxy is not supported for WebSockets")
    return WebSocketKeys(websocket, max_message, idle_timeout, session_check)
