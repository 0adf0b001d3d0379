"""Operational refusals, logged per cause without flooding.

Refusals that say something is wrong with bff's own dependencies (503: the session store or the IdP unavailable,
not ready) are logged at WARNING, per cause: one line when they start, a count per ``OUTAGE_LOG_INTERVAL`` while
they go on, one line once an interval passed without any. A refusal costs a dict lookup and an increment; one timer
per cause runs only while an outage lasts; answers that succeed pay nothing. Messages are the errors' own, which
never hold a token, a secret or a password (``bff.errors``). The lines go to the ``bff.proxy`` logger, with the
rest of the data plane's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from bff.errors import BffError, ServiceUnavailable

logger = logging.getLogger("bff.proxy")

#: Seconds between the lines that count the refusals of an ongoing outage; an interval without any ends it.
OUTAGE_LOG_INTERVAL = 10.0

#: The three lines of an outage: started (status, error, cause, message, interval), ongoing (count, cause, interval,
#: message), over (cause, interval, total, seconds from the first refusal to the last).
OUTAGE_STARTED = "proxy: answering %d %s (%s): %s; further refusals are counted every %gs"
OUTAGE_ONGOING = "proxy: %d more requests answered 503 (%s) in the last %gs: %s"
OUTAGE_OVER = "proxy: %s refusals are over (none for %gs): %d request(s) answered 503 in %.1fs"


class _Outage:
    """One cause of operational refusals while it lasts."""

    __slots__ = ("count", "last_at", "message", "started_at", "total")

    def __init__(self, message: str, now: float) -> None:
        self.message = message
        self.started_at = now
        self.last_at = now
        self.count = 0  # refusals since the last line
        self.total = 1


class OutageLog:
    """Logs operational refusals aggregated per cause (see the module docstring). ``loop_of`` gives the event loop
    whose clock and timers it uses."""

    __slots__ = ("_interval", "_loop_of", "_outages")

    def __init__(
        self, interval: float, loop_of: Callable[[], asyncio.AbstractEventLoop] = asyncio.get_running_loop
    ) -> None:
        self._interval = interval
        self._loop_of = loop_of
        self._outages: dict[type[BffError], _Outage] = {}

    def refused(self, exc: ServiceUnavailable) -> None:
        cause = type(exc)
        loop = self._loop_of()
        outage = self._outages.get(cause)
        if outage is not None:
            outage.count += 1
            outage.total += 1
            outage.last_at = loop.time()
            outage.message = exc.message
            return
        self._outages[cause] = outage = _Outage(exc.message, loop.time())
        logger.warning(OUTAGE_STARTED, exc.status, exc.error, cause.__name__, exc.message, self._interval)
        loop.call_later(self._interval, self._tick, cause, outage)

    def _tick(self, cause: type[BffError], outage: _Outage) -> None:
        if outage.count:
            logger.warning(OUTAGE_ONGOING, outage.count, cause.__name__, self._interval, outage.message)
            outage.count = 0
            self._loop_of().call_later(self._interval, self._tick, cause, outage)
            return
        del self._outages[cause]
        logger.warning(OUTAGE_OVER, cause.__name__, self._interval, outage.total, outage.last_at - outage.started_at)
