"""``X-Request-Id``: the browser's own when it is a short safe token, else a new one; sent upstream and back.

A new id is this process's random prefix and a decimal counter (``3f9c2a1b7d04e6a5-26``): unique across processes
and restarts without a ``uuid4`` (a system call) per request. A received id is kept only if it is 1 to 64 characters of
``A-Z a-z 0-9 . _ : -`` (a UUID, a W3C trace id, an ALB ``Root=1-...`` suffix all fit); anything else is replaced,
never echoed, so the header cannot carry markup, a line break or a secret of the caller's into logs or answers.
"""

from __future__ import annotations

import itertools
import os
import re

from bff.telemetry.exchange import BaseObserver, Exchange

HEADER = "x-request-id"
RAW_HEADER = b"x-request-id"
MAX_LENGTH = 64
_SAFE = re.compile(rb"[A-Za-z0-9._:\-]{1,%d}" % MAX_LENGTH)


def is_valid(value: bytes) -> bool:
    """Whether a received ``X-Request-Id`` may be kept as it is."""
    return _SAFE.fullmatch(value) is not None


class RequestIdGenerator:
    """Process prefix plus counter; a forked child draws a prefix of its own."""

    def __init__(self) -> None:
        self._reseed()
        os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        self.prefix = os.urandom(8).hex() + "-"
        self.counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter)}"  # decimal: int to str has a fast path, hex a format spec


class RequestIds(BaseObserver):
    """The observer: sets ``exchange.request_id``, adds it to the upstream request and to the browser's answer."""

    #: The proxy drops these from what the browser sent, so only this observer's value goes upstream.
    owned_headers = frozenset({RAW_HEADER})

    def __init__(self, generate: RequestIdGenerator | None = None) -> None:
        self._ids = generate or RequestIdGenerator()

    def start(self, exchange: Exchange) -> None:
        received = None
        for name, value in exchange.headers:
            if name == RAW_HEADER:
                received = value
                break
        if received is not None and _SAFE.fullmatch(received) is not None:
            request_id = received.decode("ascii")
        else:  # RequestIdGenerator.__call__, inline: a Python call is a good part of this hook's cost
            ids = self._ids
            request_id = f"{ids.prefix}{next(ids.counter)}"
        exchange.request_id = request_id
        exchange.upstream_headers.append((HEADER, request_id))
        exchange.response_headers.append((RAW_HEADER, request_id.encode("ascii")))
