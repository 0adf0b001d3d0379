"""Property: whatever the sequence of operational refusals (causes, gaps), the proxy's outage log accounts for
every refusal exactly once, closes every outage it opened, and writes a number of lines bounded by the outage's
duration, not by the number of refusals. Time is virtual: a loop stand-in with a clock the test moves."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from bff.errors import IdPUnavailable, NotReady, ServiceUnavailable, SessionStoreUnavailable
from bff.proxy import outage_log as outages

INTERVAL = 10.0
CAUSES: list[Callable[[], ServiceUnavailable]] = [
    lambda: SessionStoreUnavailable("session store redis://127.0.0.1:6379/0: GETEX failed (ConnectionError)"),
    lambda: IdPUnavailable("token endpoint (refresh_token): timed out"),
    lambda: NotReady("the identity provider's metadata is not loaded yet"),
]


class VirtualLoop:
    """What ``_OutageLog`` uses of an event loop: ``time()`` and ``call_later()``, on a clock moved by hand."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._timers, (self.now + delay, next(self._seq), callback, args))

    def advance(self, seconds: float) -> None:
        until = self.now + seconds
        while self._timers and self._timers[0][0] <= until:
            when, _, callback, args = heapq.heappop(self._timers)
            self.now = when
            callback(*args)
        self.now = until

    @property
    def pending(self) -> int:
        return len(self._timers)


def outage_log(loop: VirtualLoop) -> outages.OutageLog:
    return outages.OutageLog(INTERVAL, loop_of=lambda: cast(asyncio.AbstractEventLoop, loop))


def arg(record: logging.LogRecord, index: int) -> Any:
    assert isinstance(record.args, tuple)
    return record.args[index]


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def recorded() -> Iterator[list[logging.LogRecord]]:
    handler = Records()
    log = logging.getLogger("bff.proxy")
    log.addHandler(handler)
    try:
        yield handler.records
    finally:
        log.removeHandler(handler)


events = st.lists(
    st.tuples(st.integers(0, len(CAUSES) - 1), st.floats(0, 2.5 * INTERVAL, allow_nan=False)),
    max_size=300,
)


@settings(max_examples=200, deadline=None)
@given(events)
def test_every_refusal_is_counted_once_in_a_bounded_number_of_lines(sequence: list[tuple[int, float]]) -> None:
    loop = VirtualLoop()
    log = outage_log(loop)
    refusals: dict[str, list[float]] = {}
    with recorded() as records:
        for cause, gap in sequence:
            loop.advance(gap)
            exc = CAUSES[cause]()
            log.refused(exc)
            refusals.setdefault(type(exc).__name__, []).append(loop.now)
        loop.advance(3 * INTERVAL)  # long enough for every outage to end
    assert loop.pending == 0  # no timer left once every outage is over
    assert all(r.levelno == logging.WARNING for r in records)
    for name, times in refusals.items():
        lines = [r for r in records if isinstance(r.args, tuple) and name in r.args]
        started = [r for r in lines if r.msg == outages.OUTAGE_STARTED]
        ongoing = [r for r in lines if r.msg == outages.OUTAGE_ONGOING]
        over = [r for r in lines if r.msg == outages.OUTAGE_OVER]
        assert len(started) == len(over) >= 1
        # Every refusal counted exactly once: the first of each outage by its start line, the others in counts.
        assert len(started) + sum(arg(r, 0) for r in ongoing) == len(times)
        assert sum(arg(r, 2) for r in over) == len(times)
        # Outages follow one another: started, (ongoing...), over, started...
        kinds = [r.msg for r in lines]
        for before, after in itertools.pairwise(kinds):
            assert (before, after) != (outages.OUTAGE_STARTED, outages.OUTAGE_STARTED)
            assert before != outages.OUTAGE_OVER or after == outages.OUTAGE_STARTED
        # Bounded by time, not by refusals: a start, one line per interval the refusals span, an end.
        span = times[-1] - times[0]
        assert len(lines) <= 2 * len(started) + span / INTERVAL + len(started)


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 5000))
def test_a_burst_gives_three_lines(burst: int) -> None:
    """Any number of refusals within one interval: a start, one count, an end."""
    loop = VirtualLoop()
    log = outage_log(loop)
    with recorded() as records:
        for _ in range(burst):
            log.refused(CAUSES[0]())
            loop.advance(INTERVAL / (2 * burst))
        loop.advance(3 * INTERVAL)
    assert [r.msg for r in records] == [outages.OUTAGE_STARTED, outages.OUTAGE_ONGOING, outages.OUTAGE_OVER]
    assert arg(records[1], 0) == burst - 1
    assert arg(records[2], 2) == burst
