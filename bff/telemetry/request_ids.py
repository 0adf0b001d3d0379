"""``X-Request-Id``: the browser's own when it is a short safe token, else a new one; sent upstream and back.

A new id is this process's random prefix and a decimal counter from 1000 (``3f9c2a1b7d04e6a5-1026``): unique across
processes and restarts without a ``uuid4`` (a system call) per request. A received id is kept only if it is 1 to 64
characters of ``A-Z a-z 0-9 . _ : -`` (a UUID, a W3C trace id, an ALB ``Root=1-...`` suffix all fit); anything else is
replaced, never echoed, so the header cannot carry markup, a line break or a secret of the caller's into logs or
answers.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

from bff.telemetry.exchange import BaseObserver, Exchange

HEADER = "x-request-id"
RAW_HEADER = b"x-request-id"
MAX_LENGTH = 64
SAFE = re.compile(rb"[A-Za-z0-9._:\-]{1,%d}" % MAX_LENGTH)


def is_valid(value: bytes) -> bool:
    """Whether a received ``X-Request-Id`` may be kept as it is."""
    return SAFE.fullmatch(value) is not None


#: Ids are made this many at a time, by one ``str.join`` and two ``split``: a batch is the counter's ``BATCH`` values
#: ``n * BATCH`` to ``n * BATCH + BATCH - 1``, whose last three digits come from ``_LOW``. ``str(int)`` per id would
#: cost more than the rest of the id together (a division per digit).
BATCH = 1000
_LOW = tuple(f"{i:03d}" for i in range(BATCH))


class RequestIdGenerator:
    """Process prefix plus counter; a forked child draws a prefix of its own.

    ``next(generator.ids)`` is the next id, as ``str`` (the upstream request's and the log's) and as ``bytes`` (the
    browser's answer's); StopIteration: ``refill()`` gives it and makes the next batch."""

    def __init__(self) -> None:
        self._reseed()
        os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        self.prefix = os.urandom(8).hex() + "-"
        self._batch = 1  # the counter starts at BATCH: every id has at least four digits
        self.ids: Iterator[tuple[str, bytes]] = iter(())

    def refill(self) -> tuple[str, bytes]:
        """A new batch; its first id."""
        head = self.prefix + str(self._batch)
        self._batch += 1
        text = head + ("\n" + head).join(_LOW)
        self.ids = zip(text.split("\n"), text.encode("ascii").split(b"\n"), strict=True)
        return next(self.ids)

    def __call__(self) -> str:
        """The next id."""
        try:
            return next(self.ids)[0]
        except StopIteration:
            return self.refill()[0]


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
        request_id, raw = received.decode("ascii"), received
    else:
        try:
            request_id, raw = next(ids.ids)
        except StopIteration:
            request_id, raw = ids.refill()
    exchange.request_id = request_id
    exchange.upstream_headers.append((HEADER, request_id))
    exchange.response_headers.append((RAW_HEADER, raw))
