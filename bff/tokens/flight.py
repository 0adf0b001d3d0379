"""What the parts of one refresh flight share (``bff.tokens.refresh`` runs it; ``spending`` and ``exchange_flight``
call the IdP for it): the pacing of its waits and retries, its deadline at the IdP, and the ``Attempt`` it records
for the metrics of the requests that wait for it."""

from __future__ import annotations

import dataclasses
from typing import Literal

from bff.config import TokenSettings
from bff.errors import IdPUnavailable
from bff.oidc.provider import IdentityProvider

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


def retry_soon(message: str) -> IdPUnavailable:
    """A 503 that asks the browser to come back in ``RETRY_SOON`` seconds."""
    error = IdPUnavailable(message)
    error.retry_after = RETRY_SOON
    return error
