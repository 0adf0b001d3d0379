"""``Spender``: presenting a session's refresh token to the IdP, and storing what it answered, so that the token is
never presented twice, even across a store failover.

Called by the single-flight core (``bff.tokens.refresh``) under the session's refresh lock, which alone does not keep
a second refresher away when a store failover loses the lock while its holder is still storing the result (the
promoted replica may miss the lock's latest renewal, and the holder's writes fail until it reconnects;
docs/redis-ha.md). Two more guards cover that window:

* The *spending mark* (``spend``): a random value claimed with ``SET NX`` before the IdP call, so at most one
  refresher holds it; a refresher that finds another's mark, and no refresh result, answers 503 instead of
  presenting the token again. Its holder clears it once the result is stored. When the IdP call fails, or the claim
  itself went unconfirmed (it may still land, even later than the holder's next write), the holder *renounces* it:
  it writes a note naming the mark, again and again while the store fails, until its deadline. A mark with such a
  note holds nothing back, whichever of the two lands first, and the next refresher removes it.
* The *rotated write* (``store_rotated``): the refresh result and the compare-and-set of the new tokens, retried while
  the store fails until the refresh's deadline, in a task of its own that a cancelled flight (a shutdown) waits for
  instead of stopping; the refreshed ID token's check runs first in that task, so nothing between the IdP's answer
  and the write can be cancelled. The IdP has spent the old token: losing the new one would make the next refresh
  present the spent one.

So once the store is back, the holder's pending write lands at its next retry, and the session is served again.
Both because an IdP with reuse detection answers a spent refresh token by revoking the whole token family, logging
the user out (RFC 9700 4.14.2).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import TypeVar

from bff.config import RouteSettings
from bff.errors import IdPUnavailable, InvalidGrant, SessionExpired, SessionStoreUnavailable
from bff.models import Session, TokenSet
from bff.session.manager import LoadedSession
from bff.tokens.flight import POLL_MAX, POLL_MIN, Attempt, FlightContext, call_token_endpoint, retry_soon

logger = logging.getLogger("bff.tokens")

#: How long a refresh result stays readable for stragglers, at least (longer when a spending mark may live longer).
RESULT_TTL = 60.0
#: How long tokens whose refreshed ID token could not be checked are kept for a later refresh to check: an outage of
#: the IdP's keys longer than this loses them (the next refresh then presents the spent token).
UNCHECKED_TTL = 3600.0
#: The 503's message when another refresher holds the spending mark.
MARK_HELD = "another refresh spent this session's refresh token and is storing the result"

T = TypeVar("T")


class Spender:
    def __init__(self, context: FlightContext, *, sleep: Callable[[float], Awaitable[None]]) -> None:
        self.context = context
        self._sleep = sleep
        #: Refresh calls this process made to the IdP.
        self.refresh_count = 0
        #: The spending marks this process holds on refresh tokens the IdP has spent, until their results are stored.
        self._marks: dict[str, bytes] = {}
        #: The writes of rotated tokens running (``store_rotated``), each with its deadline, held until they end.
        self._storing: dict[asyncio.Task[LoadedSession | None], float] = {}

    async def spend(
        self, current: LoadedSession, spent: str, route: RouteSettings | None, attempt: Attempt
    ) -> TokenSet:
        """Present ``spent`` to the IdP, holding its spending mark (see the module docstring) until the result is
        stored (``store_rotated``) or, when the call fails, renouncing it (RFC 9700 4.14.2: a token presented twice
        makes the IdP revoke the family)."""
        ttl = self._mark_ttl()
        lease = self.context.settings.refresh_lock_lease
        until = asyncio.get_running_loop().time() + self.context.refresh_timeout + lease
        mark = secrets.token_urlsafe(16).encode("ascii")
        try:
            claimed = await self._claim(spent, mark, ttl)
        except SessionStoreUnavailable:
            await self._renounce(spent, mark, ttl, until)  # unconfirmed: it may have landed, or land later
            raise
        if not claimed:
            raise retry_soon(MARK_HELD)
        try:
            await self._still_unspent(current, spent)
            new = await self._call_idp(current, spent, route, attempt)
        except BaseException as exc:
            # A cancellation (shutdown) tries once; anything else until the deadline.
            await self._renounce(spent, mark, ttl, until if isinstance(exc, Exception) else 0.0)
            raise
        self._marks[spent] = mark
        return new

    async def store_rotated(
        self,
        current: LoadedSession,
        updated: Session,
        spent: str,
        result: TokenSet | None,
        until: float,
        *,
        check: Callable[[], Awaitable[None]] | None = None,
    ) -> LoadedSession | None:
        """Write what the IdP answered, again and again while the store fails, until ``until`` (the lock is held
        and renewed meanwhile), then clear this refresh's spending mark. The IdP has spent the old refresh token: if
        the new one is lost (a store failing over drops or refuses the write, a shutdown cancels the flight), the
        next refresh presents the spent one, and an IdP with reuse detection revokes the whole family (RFC 9700
        4.14.2). So the write, and the ``check`` the new tokens must pass before it (the refreshed ID token's, which
        may fetch the IdP's keys), run in a task of its own that the caller's cancellation does not reach: a
        cancelled caller waits for it (until ``until``), then ends cancelled. A failed check stores nothing. Both
        writes are idempotent: the refresh result is a plain SET, and a compare-and-set that landed before its
        confirmation failed finds the record changed and returns None (the caller then reloads the session that
        holds the new tokens)."""
        loop = asyncio.get_running_loop()
        mark = self._marks.pop(spent, None)  # the write's now: a flight that ends first must not forget it
        task = loop.create_task(self._store(current, updated, spent, result, until, mark, check))
        self._storing[task] = until
        task.add_done_callback(self._stored)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():  # the caller was cancelled, not the write: hold the lock until it lands
                await asyncio.wait({task}, timeout=max(until - loop.time(), 0.0))
            raise

    def storing(self) -> dict[asyncio.Task[LoadedSession | None], float]:
        """The writes of rotated tokens still running, each with its deadline (for shutdown)."""
        return dict(self._storing)

    def _stored(self, task: asyncio.Task[LoadedSession | None]) -> None:
        del self._storing[task]
        if not task.cancelled():
            task.exception()  # seen: a caller cancelled meanwhile no longer retrieves it

    async def _store(
        self,
        current: LoadedSession,
        updated: Session,
        spent: str,
        result: TokenSet | None,
        until: float,
        mark: bytes | None,
        check: Callable[[], Awaitable[None]] | None,
    ) -> LoadedSession | None:
        sessions = self.context.sessions
        # Outlive the longest spending mark by a lease: a straggler that finds the mark gone still finds the result.
        result_ttl = max(RESULT_TTL, self._mark_ttl() + self.context.settings.refresh_lock_lease)
        if check is not None:
            try:
                await check()
            except IdPUnavailable:
                if result is not None:
                    await self._keep_unchecked(spent, result, until, mark)
                raise

        async def write() -> LoadedSession | None:
            if result is not None:
                await sessions.save_refresh_result(spent, result, result_ttl)
            return await sessions.replace(current, updated)

        try:
            written = await self._retrying(write, until, "the rotated tokens")
        except SessionStoreUnavailable as exc:
            logger.exception(
                "could not store the rotated tokens before the refresh deadline; the next refresh presents the "
                "spent refresh token once its spending mark expires: %s",
                exc.message,
            )
            raise
        await self._clear_mark(spent, mark)
        return written

    async def _clear_mark(self, spent: str, mark: bytes | None) -> None:
        """Once what ``spent`` was exchanged for is stored: its mark, if this refresh holds one, is removed."""
        if mark is None:
            return
        sessions = self.context.sessions
        try:
            await sessions.store.compare_and_set(sessions.spending_key(spent), mark, b"", 0)
        except SessionStoreUnavailable as exc:  # harmless: what it holds back is stored, and the mark expires
            logger.warning("could not clear a spent refresh token's mark: %s", exc.message)

    async def _keep_unchecked(self, spent: str, result: TokenSet, until: float, mark: bytes | None) -> None:
        """The new ID token could not be checked (the IdP's keys did not answer): serve none of ``result``, but keep
        it for the next refresh to check (``Rotation.remembered``) rather than lose it (the IdP has spent ``spent``),
        and clear the mark once it is kept, as a stored result does."""
        sessions = self.context.sessions

        async def write() -> None:
            await sessions.save_unchecked_refresh_result(spent, result, UNCHECKED_TTL)

        try:
            await self._retrying(write, until, "the rotated tokens whose ID token could not be checked")
        except SessionStoreUnavailable as exc:
            logger.exception("could not keep the rotated tokens whose ID token could not be checked: %s", exc.message)
            return
        logger.warning(
            "the refreshed ID token could not be checked (the IdP's keys did not answer); its tokens are"
            " kept for the next refresh to check"
        )
        await self._clear_mark(spent, mark)

    def _mark_ttl(self) -> float:
        """A spending mark's lifetime: it outlives its holder's last retry (the refresh deadline plus a lease) by a
        lease."""
        return self.context.refresh_timeout + 2 * self.context.settings.refresh_lock_lease

    def forget(self, spent: str) -> None:
        """This flight ends without storing a result for ``spent``: its mark, if any, is left to expire."""
        self._marks.pop(spent, None)

    async def _claim(self, spent: str, mark: bytes, ttl: float) -> bool:
        """Take the spending mark on ``spent``: True when it is ``mark``'s, False when another refresher holds it.
        A renounced mark is removed and taken."""
        sessions = self.context.sessions
        store, key = sessions.store, sessions.spending_key(spent)
        for _ in range(2):  # a renounced mark, removed, may be taken by someone else first: then it is theirs
            if await store.set_if_absent(key, mark, ttl):
                return True
            holder = await store.get(key)
            if holder == mark:  # ours: a connection error retried a SET NX that had landed
                return True
            if holder is None:
                continue  # expired meanwhile
            renounced = sessions.renounced_key(spent, holder.decode("ascii", "replace"))
            if await store.get(renounced) is None:
                return False
            await store.compare_and_set(key, holder, b"", 0)
        return False

    async def _still_unspent(self, current: LoadedSession, spent: str) -> None:
        """The mark is ours, but its previous holder may have stored its result and cleared it since the session
        was read: read it again (a holder clears its mark only after the session write)."""
        now = await self.context.sessions.load_key(current.key, strict=True)
        if now is None:
            raise SessionExpired("the session ended (logged out elsewhere or expired)")
        if now.session.tokens.refresh_token != spent:
            raise retry_soon("another refresh stored this session's new tokens just now")

    async def _renounce(self, spent: str, mark: bytes, ttl: float, until: float) -> None:
        """Note that ``mark`` holds nothing back, and remove it if it is there, until the store confirms (or
        ``until``: then the mark, if it landed, expires on its own). The note outlives a mark that lands late."""
        sessions = self.context.sessions
        renounced = sessions.renounced_key(spent, mark.decode("ascii"))

        async def write() -> None:
            await sessions.store.set(renounced, b"1", 2 * ttl)
            await sessions.store.compare_and_set(sessions.spending_key(spent), mark, b"", 0)

        try:
            await self._retrying(write, until, "that a refresh token was not spent")
        except SessionStoreUnavailable as exc:
            logger.warning("could not renounce a refresh token's spending mark (it expires): %s", exc.message)

    async def _retrying(self, write: Callable[[], Awaitable[T]], until: float, what: str) -> T:
        """``write()``, again and again while the store fails, until ``until``; then its last failure is raised."""
        loop = asyncio.get_running_loop()
        pause = POLL_MIN
        while True:
            try:
                return await write()
            except SessionStoreUnavailable as exc:
                if loop.time() + pause > until:
                    raise
                logger.warning("could not store %s (trying again): %s", what, exc.message)
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
