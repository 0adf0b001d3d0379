"""``X-Request-Id``: the browser's own when it is a short safe token, else a new one; sent upstream and back.

A new id is this process's random prefix and a decimal counter (``3f9c2a1b7d04e6a5-26``): unique across processes
and restarts without a ``uuid4`` (a system call) per request. A received id is kept only if it is 1 to 64 characters of
``A-Z a-z 0-9 . _ : -`` (a UUID, a W3C trace id, an ALB ``Root=1-...`` suffix all fit); anything else is replaced,
never echoed, so the header cannot carry markup, a line break or a secret of the caller's into logs or answers.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from itertools import repeat

from bff.telemetry.exchange import BaseObserver, Exchange

HEADER = "x-request-id"
RAW_HEADER = b"x-request-id"
MAX_LENGTH = 64
SAFE = re.compile(rb"[A-Za-z0-9._:\-]{1,%d}" % MAX_LENGTH)


def is_valid(value: bytes) -> bool:
    """Whether a received ``X-Request-Id`` may be kept as it is."""
    return SAFE.fullmatch(value) is not None


#: Ids are made this many at a time (in C: ``str.join``, ``split``, ``zip``), with both header fields of each.
BATCH = 256
#: One request's header fields: the upstream request's (``str``) and the browser's answer's (``bytes``).
HeaderPair = tuple[tuple[str, str], tuple[bytes, bytes]]


class RequestIdGenerator:
    """Process prefix plus counter; a forked child draws a prefix of its own.

    ``next(generator.pairs)`` is the next id's header pair (StopIteration: ``refill()`` gives it and the next batch).
    Made a batch at a time: a per-request f-string, ``encode`` and two tuples cost several times as much."""

    def __init__(self) -> None:
        self._reseed()
        os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        self.prefix = os.urandom(8).hex() + "-"
        self._next = 1  # decimal: int to str has a fast path, hex a format spec
        self.pairs: Iterator[HeaderPair] = iter(())

    def refill(self) -> HeaderPair:
        """A new batch; its first pair."""
        start, self._next = self._next, self._next + BATCH
        prefix = self.prefix
        text = prefix + ("\n" + prefix).join(map(str, range(start, self._next)))
        upstream = zip(repeat(HEADER), text.split("\n"))
        browser = zip(repeat(RAW_HEADER), text.encode("ascii").split(b"\n"))
        self.pairs = zip(list(upstream), list(browser), strict=True)
        return next(self.pairs)

    def __call__(self) -> str:
        """The next id."""
        try:
            pair = next(self.pairs)
        except StopIteration:
            pair = self.refill()
        return pair[0][1]


class RequestIds(BaseObserver):
    """The observer: sets ``exchange.request_id``, adds it to the upstream request and to the browser's answer."""

    #: The proxy drops these from what the browser sent, so only this observer's value goes upstream.
    owned_headers = frozenset({RAW_HEADER})

    def __init__(self, generate: RequestIdGenerator | None = None) -> None:
        self._ids = generate or RequestIdGenerator()

    def start(self, exchange: Exchange) -> None:
        assign(exchange, self._ids)


def assign(exchange: Exchange, ids: RequestIdGenerator) -> None:
    """Set ``exchange.request_id`` (the browser's own when safe, else the next of ``ids``) and its two header fields."""
    received = None
    for name, value in exchange.headers:
        if name == RAW_HEADER:
            received = value
            break
    if received is not None and SAFE.fullmatch(received) is not None:
        upstream, browser = (HEADER, received.decode("ascii")), (RAW_HEADER, received)
    else:
        try:
            upstream, browser = next(ids.pairs)
        except StopIteration:
            upstream, browser = ids.refill()
    exchange.request_id = upstream[1]
    exchange.upstream_headers.append(upstream)
    exchange.response_headers.append(browser)
