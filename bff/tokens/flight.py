"""What the parts of one refresh flight share (``bff.tokens.refresh`` runs it; ``spending`` and ``exchange_flight``
call the IdP for it): the pacing of its waits and retries, its deadline at the IdP, the ``Attempt`` it records for
the metrics of the requests that wait for it, and the one bounded call to the IdP's token endpoint."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Literal

from bff.config import TokenSettings
from bff.errors import IdPUnavailable
from bff.models import TokenSet
from bff.oidc.provider import IdentityProvider
from bff.session.manager import SessionManager
from bff.tokens.idp_probe import IdPProbe

#: Polling interval bounds while another process holds the refresh lock (and between two store retries).
POLL_MIN, POLL_MAX = 0.02, 0.25
#: Retry-After (seconds) of a 503 while a refresh is still in flight or the IdP is being probed.
RETRY_SOON = 1

RefreshOutcome = Literal["ok", "joined", "invalid_grant", "idp_unavailable", "sub_mismatch", "error"]


@dataclasses.dataclass(slots=True)
class Attempt:
    """What a flight found out, for the metrics of the requests that wait for it."""

    #: The flight used someone else's refresh (another process's, or a result a previous refresh left).
    joined: bool = False
    #: Why the flight failed, when the exception alone does not say (a SessionExpired has several causes).
    failure: RefreshOutcome | None = None


def refresh_timeout(settings: TokenSettings, idp: IdentityProvider) -> float:
    """How long the IdP may take to answer a refresh: never less than a request waits for it."""
    return max(settings.refresh_timeout, idp.settings.timeout)


@dataclasses.dataclass(frozen=True, slots=True)
class FlightContext:
    """What each part of a flight works with: the sessions, the IdP and its probe, the token settings."""

    sessions: SessionManager
    idp: IdentityProvider
    probe: IdPProbe
    settings: TokenSettings

    @property
    def refresh_timeout(self) -> float:
        return refresh_timeout(self.settings, self.idp)


def retry_soon(message: str) -> IdPUnavailable:
    """A 503 that asks the browser to come back in ``RETRY_SOON`` seconds."""
    error = IdPUnavailable(message)
    error.retry_after = RETRY_SOON
    return error


async def call_token_endpoint(
    probe: IdPProbe, grant: str, limit: float, call: Callable[[], Awaitable[TokenSet]], *, what: str
) -> TokenSet:
    """``call`` (one request to the IdP's token endpoint for ``grant``) within ``limit`` seconds, unless the IdP is
    marked down. A failing
    IdP (timeout, 5xx, garbage: ``IdPUnavailable``) is marked down, and the 503 asks to come back soon."""
    if probe.down:
        raise retry_soon(f"the identity provider is failing; {what} resume as soon as it answers")
    try:
        try:
            # httpx bounds each read and write; this bounds the whole call (an IdP trickling bytes).
            async with asyncio.timeout(limit):
                return await call()
        except TimeoutError as exc:
            raise IdPUnavailable(f"token endpoint ({grant}): no answer within {limit:g}s") from exc
    except IdPUnavailable as exc:
        probe.failed()
        exc.retry_after = RETRY_SOON
        raise
