"""Back-channel logout (OpenID Connect Back-Channel Logout 1.0): tell a client that a user's session ended.

For each (client, sid, sub) the IdP POSTs a logout token, form-encoded as ``logout_token`` (section 2.5), to the
client's registered ``backchannel_logout_uri``. Sent when a refresh token is reused (its family is revoked), when a
user's password changes, when an admin revokes a family, and when the IdP session ends (``/end_session``).

Notifications are awaited, all of one event concurrently and each with a short timeout, rather than fired and
forgotten: the outcome is logged in order and a test sees the token as soon as the triggering request returns. A
failure (connection refused, timeout, non-2xx) is logged and never fails the operation that triggered it: the
revocation has already happened at the IdP, the notification only speeds up the client (section 2.8: the RP answers
200; the OP does not retry).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import httpx

from bff_devtools.devidp.minter import TokenMinter
from bff_devtools.devidp.settings import DevIdPSettings

logger = logging.getLogger("bff_devtools.devidp.backchannel")

#: Seconds a client gets to answer a logout request.
TIMEOUT = 5.0


@dataclass(frozen=True)
class LogoutTarget:
    """One session of one user at one client."""

    client_id: str
    sub: str
    sid: str


class BackchannelNotifier:
    """Sends logout tokens. ``http`` belongs to the app's lifespan."""

    def __init__(self, settings: DevIdPSettings, minter: TokenMinter, http: httpx.AsyncClient) -> None:
        self._settings = settings
        self._minter = minter
        self._http = http

    async def notify(self, targets: Iterable[LogoutTarget]) -> None:
        """One logout token per distinct target whose client registered a back-channel URI."""
        await asyncio.gather(*(self._send(target) for target in dict.fromkeys(targets)))

    async def _send(self, target: LogoutTarget) -> None:
        client = self._settings.client(target.client_id)
        if client is None or client.backchannel_logout_uri is None:
            return
        token = self._minter.logout_token(client_id=client.client_id, sub=target.sub, sid=target.sid)
        try:
            response = await self._http.post(
                client.backchannel_logout_uri, data={"logout_token": token}, timeout=TIMEOUT
            )
        except httpx.HTTPError as exc:
            logger.warning("back-channel logout to client %s failed (%s)", client.client_id, type(exc).__name__)
            return
        if response.is_success:
            logger.info("back-channel logout sent to client %s", client.client_id)
        else:
            logger.warning("back-channel logout to client %s answered HTTP %d", client.client_id, response.status_code)
