"""Back-channel logout (OpenID Connect Back-Channel Logout 1.0): tell a client that a user's session ended.

For each (client, sid, sub) the IdP POSTs a logout token, form-encoded as ``logout_token`` (section 2.5), to the
client's registered ``backchannel_logout_uri``. Sent when a refresh token is reused (its family is revoked), when a
user's password changes, when an admin revokes a family, and when the IdP session ends (``/end_session``).

The first delivery of each notification is awaited, all of one event concurrently and each with a short timeout,
rather than fired and forgotten: the outcome is logged in order and a test sees the token as soon as the triggering
request returns. A failure never fails the operation that triggered it: the revocation has already happened at the
IdP, the notification only speeds up the client.

A delivery that failed for a reason that may pass (connection refused, timeout, 5xx, 408, 429) is retried in the
background with a bounded exponential back-off (``RETRY_DELAYS``, about a minute in all, with jitter so many
retries do not arrive together), each time with a fresh logout token: the RP may keep the ``jti`` of the ones it
processed (section 2.6) and the token's ``exp`` is short. A refusal (another 4xx: section 2.8, the RP found the
token invalid) is final. At most ``MAX_PENDING`` retries wait at a time, so a client that stays down cannot make
them pile up; ``aclose()`` abandons the ones still waiting when the IdP stops.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass

import httpx

from bff_devtools.devidp.minter import TokenMinter
from bff_devtools.devidp.settings import ClientRegistration, DevIdPSettings

logger = logging.getLogger("bff_devtools.devidp.backchannel")

#: Seconds a client gets to answer a logout request.
TIMEOUT = 5.0
#: Seconds to wait before each retry of a failed delivery (each one drawn between 75 % and 100 % of its value).
RETRY_DELAYS: tuple[float, ...] = (2.0, 4.0, 8.0, 16.0, 32.0)
#: Retries waiting at one time; a failed delivery beyond it is logged and dropped.
MAX_PENDING = 1000
#: Answers that say "not now" rather than "no" (RFC 9110 15.5.9, RFC 6585 4, and every 5xx).
_TRANSIENT = frozenset({408, 429})


@dataclass(frozen=True)
class LogoutTarget:
    """One session of one user at one client."""

    client_id: str
    sub: str
    sid: str


class BackchannelNotifier:
    """Sends logout tokens. ``http`` belongs to the app's lifespan, which calls ``aclose()`` before closing it."""

    def __init__(self, settings: DevIdPSettings, minter: TokenMinter, http: httpx.AsyncClient) -> None:
        self._settings = settings
        self._minter = minter
        self._http = http
        self._retries: set[asyncio.Task[None]] = set()

    async def notify(self, targets: Iterable[LogoutTarget]) -> None:
        """One logout token per distinct target whose client registered a back-channel URI."""
        await asyncio.gather(*(self._first(target) for target in dict.fromkeys(targets)))

    async def aclose(self) -> None:
        """Abandon the retries still waiting."""
        retries, self._retries = self._retries, set()
        for task in retries:
            task.cancel()
        await asyncio.gather(*retries, return_exceptions=True)

    @property
    def pending(self) -> int:
        """Retries waiting or running."""
        return len(self._retries)

    async def _first(self, target: LogoutTarget) -> None:
        client = self._settings.client(target.client_id)
        if client is None or client.backchannel_logout_uri is None:
            return
        if await self._deliver(client, client.backchannel_logout_uri, target, attempt=1):
            return
        if len(self._retries) >= MAX_PENDING:
            logger.warning("back-channel logout to client %s: too many retries pending, not retrying", client.client_id)
            return
        task = asyncio.get_running_loop().create_task(self._retry(client, client.backchannel_logout_uri, target))
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def _retry(self, client: ClientRegistration, uri: str, target: LogoutTarget) -> None:
        for attempt, delay in enumerate(RETRY_DELAYS, start=2):
            await asyncio.sleep(delay * random.uniform(0.75, 1.0))  # noqa: S311 - jitter, not a secret
            if await self._deliver(client, uri, target, attempt=attempt):
                return
        logger.warning("back-channel logout to client %s: giving up after %d attempts", client.client_id, attempt)

    async def _deliver(self, client: ClientRegistration, uri: str, target: LogoutTarget, *, attempt: int) -> bool:
        """One delivery; True when it is over (delivered or refused for good), False when it may be retried."""
        token = self._minter.logout_token(client_id=client.client_id, sub=target.sub, sid=target.sid)
        try:
            response = await self._http.post(uri, data={"logout_token": token}, timeout=TIMEOUT)
        except httpx.HTTPError as exc:
            logger.warning(
                "back-channel logout to client %s failed (%s, attempt %d)",
                client.client_id,
                type(exc).__name__,
                attempt,
            )
            return False
        if response.is_success:
            logger.info("back-channel logout sent to client %s (attempt %d)", client.client_id, attempt)
            return True
        status = response.status_code
        transient = status >= 500 or status in _TRANSIENT
        logger.warning(
            "back-channel logout to client %s answered HTTP %d (attempt %d%s)",
            client.client_id,
            status,
            attempt,
            "" if transient else ", not retried",
        )
        return not transient
