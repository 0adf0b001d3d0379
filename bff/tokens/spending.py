"""``Spender``: presenting a session's refresh token to the IdP, and storing what it answered, so that the token is
never presented twice, even across a store failover.

Called by the single-flight core (``bff.tokens.refresh``) under the session's refresh lock, which alone does not keep
a second refresher away when a store failover loses the lock while its holder is still storing the result (the
promoted replica may miss the lock's latest renewal, and the holder's writes fail until it reconnects;
docs/redis-ha.md). Two more guards cover that window:

* The *spending mark* (``spend``): written before the IdP call, removed when the call fails (nothing was spent). A
  refresher that finds it, and no refresh result, answers 503 instead of presenting the token again.
* The *rotated write* (``store_rotated``): the refresh result and the compare-and-set of the new tokens, retried while
  the store fails until the refresh's deadline. The IdP has spent the old token: losing the new one would make the
  next refresh present the spent one.

Both because an IdP with reuse detection answers a spent refresh token by revoking the whole token family, logging
the user out (RFC 9700 4.14.2).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bff.config import RouteSettings
from bff.errors import IdPUnavailable, InvalidGrant, SessionExpired, SessionStoreUnavailable
from bff.models import Session, TokenSet
from bff.session.manager import LoadedSession
from bff.tokens.flight import POLL_MAX, POLL_MIN, Attempt, FlightContext, call_token_endpoint, retry_soon

logger = logging.getLogger("bff.tokens")

#: How long a refresh result stays readable for stragglers.
RESULT_TTL = 60.0


class Spender:
    def __init__(self, context: FlightContext, *, sleep: Callable[[float], Awaitable[None]]) -> None:
        self.context = context
        self._sleep = sleep
        #: Refresh calls this process made to the IdP.
        self.refresh_count = 0

    async def spend(
        self, current: LoadedSession, spent: str, route: RouteSettings | None, attempt: Attempt
    ) -> TokenSet:
        """Present ``spent`` to the IdP, marked in the store as being spent until its result is stored.

        A refresher that finds the spent token in the session, no result and this mark, answers 503 instead of
        presenting the token again (RFC 9700 4.14.2: the IdP would revoke the family). The mark outlives the
        holder's retries; a failed IdP call removes it, as nothing was spent."""
        if await self.context.sessions.is_spending(spent):
            raise retry_soon("another refresh spent this session's refresh token and is storing the result")
        try:
            # A mark the store did not confirm may still have landed: it is removed like one after a failed call.
            await self.context.sessions.mark_spending(
                spent, self.context.refresh_timeout + 2 * self.context.settings.refresh_lock_lease
            )
            return await self._call_idp(current, spent, route, attempt)
        except BaseException:
            try:
                await self.context.sessions.unmark_spending(spent)
            except SessionStoreUnavailable as exc:
                logger.warning("could not clear a refresh token's spending mark (it expires): %s", exc.message)
            raise

    async def store_rotated(
        self, current: LoadedSession, updated: Session, spent: str, result: TokenSet | None, until: float
    ) -> LoadedSession | None:
        """Write what the IdP answered, again and again while the store fails, until ``until`` (the lock is held
        and renewed meanwhile). The IdP has spent the old refresh token: if the new one is lost (a store failing
        over drops or refuses the write), the next refresh presents the spent one, and an IdP with reuse detection
        revokes the whole family (RFC 9700 4.14.2). Both writes are idempotent: the refresh result is a plain SET,
        and a compare-and-set that landed before its confirmation failed finds the record changed and returns None
        (the caller then reloads the session that holds the new tokens)."""
        loop = asyncio.get_running_loop()
        pause = POLL_MIN
        while True:
            try:
                if result is not None:
                    await self.context.sessions.save_refresh_result(spent, result, RESULT_TTL)
                return await self.context.sessions.replace(current, updated)
            except SessionStoreUnavailable as exc:
                if loop.time() + pause > until:
                    logger.exception(
                        "could not store the rotated tokens before the refresh deadline; the next refresh presents "
                        "the spent refresh token: %s",
                        exc.message,
                    )
                    raise
                logger.warning("could not store the rotated tokens (trying again): %s", exc.message)
            await self._sleep(pause)
            pause = min(pause * 2, POLL_MAX)

    async def _call_idp(
        self, current: LoadedSession, spent: str, route: RouteSettings | None, attempt: Attempt
    ) -> TokenSet:
        timeout = self.context.refresh_timeout
        try:
            new = await call_token_endpoint(
                self.context.probe,
                "refresh_token",
                timeout,
                lambda: self.context.idp.client.refresh(
                    spent,
                    scopes=route.scopes if route else (),
                    resource=route.resource if route else None,
                    io_timeout=timeout,
                ),
                what="refreshes",
            )
        except InvalidGrant as exc:
            logger.info("refresh token refused by the IdP (%s); ending the session", exc.oauth_error or "invalid_grant")
            attempt.failure = "invalid_grant"
            await self.context.sessions.delete(current, reason="refresh_failed")
            raise SessionExpired("the session expired or was revoked at the identity provider") from exc
        except IdPUnavailable as exc:
            logger.warning("token refresh failed, keeping the session: %s", exc.message)
            raise
        self.refresh_count += 1
        return new
