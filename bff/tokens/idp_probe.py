"""``IdPProbe``: whether the identity provider is failing, and the one background task that notices it recover.

An IdP whose refresh failed (connection refused, timeout, 5xx, garbage) is marked down: refreshes fail at once with
503 and ``Retry-After`` instead of sending it refresh tokens, while one background task probes the token endpoint
every ``PROBE_INTERVAL`` (a POST without a grant or credentials; any answer below 500 but 429 means it works again).
Refreshes resume as soon as it answers, and however the probe ends the mark is cleared: never stuck.
"""

from __future__ import annotations

import asyncio
import logging

from bff.oidc.provider import IdentityProvider

logger = logging.getLogger("bff.tokens")

#: Seconds between two probes of a failing IdP.
PROBE_INTERVAL = 0.5


class IdPProbe:
    def __init__(self, idp: IdentityProvider, *, io_timeout: float) -> None:
        self.idp = idp
        self.io_timeout = io_timeout
        #: The IdP failed: refreshes fail fast until the probe sees it answer again.
        self.down = False
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def failed(self) -> None:
        """Fail refreshes fast from now on, and start the one probe that ends this as soon as the IdP answers."""
        self.down = True
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._probe())

    async def _probe(self) -> None:
        try:
            while not self._closed:
                await asyncio.sleep(PROBE_INTERVAL)
                if await self.idp.client.probe(io_timeout=self.io_timeout):
                    logger.info("the identity provider answers again; token refreshes resume")
                    return
        finally:
            # However the probe ends (the IdP answers, shutdown, a bug), refreshes are tried again: never stuck.
            self.down = False
            self._task = None

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The probe running now, if any."""
        return self._task

    def close(self) -> None:
        """Shutdown: start no probe from now on; a running one ends at its next turn (or when its owner stops it)."""
        self._closed = True
