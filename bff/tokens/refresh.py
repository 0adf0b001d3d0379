"""``Refresher``: refreshing one session's tokens, single-flight within the process and across processes, so that
with refresh-token rotation two requests can never spend the same refresh token (which an IdP with reuse detection
answers by revoking the whole token family, logging the user out).

1. Single-flight in the process: concurrent callers for one session join the same task. The task runs on its own:
   neither a browser that leaves nor a request that gives up waiting cancels it.
2. A short-lived *refresh result* keyed by a hash of the spent refresh token: a straggler that still holds the old
   tokens picks up the new ones, and so does a refresh whose session still holds the spent token because the
   session write was lost (a route's own refresh adopts the login's new tokens first, then refreshes from them).
3. Single-flight across processes and instances: a store lock with a lease, renewed every third of the lease while
   the IdP call runs, so a slow IdP cannot let a second refresher in. Whoever does not get the lock waits for the
   session to change (polling the store) instead of refreshing.
4. Under the lock: reload and check again (oauth2-proxy ``stored_session.go``: "Reload the session in case it was
   changed underneath us"); someone else may have refreshed already.
5. A *spending mark* on the refresh token, claimed before the IdP call, cleared once the result is stored and
   renounced when the call fails: a refresher that finds another's mark, and no refresh result, answers 503
   instead of presenting the token again. It covers a lock lost in a store failover while its holder is still
   storing the result (docs/redis-ha.md; ``bff.tokens.spending``).
6. The IdP call. ``invalid_grant`` (revoked, expired, reuse detected) ends the session: deleted, cookie cleared,
   401 ``session_expired``. Timeouts, 5xx and garbage keep the session: 503 with ``Retry-After``, and the IdP is
   marked down until it answers again (``bff.tokens.idp_probe``).
7. A compare-and-set write of the new tokens (new refresh token atomically with the new access token; the old one
   kept when the IdP did not rotate it). A CAS on a deleted session fails: a logout or back-channel logout racing a
   refresh never resurrects the session (the freshly issued refresh token is revoked instead). While the store
   fails, the refresh result and this write are retried, under the lock, until the refresh's deadline, in a task
   that a cancelled flight waits for, the refreshed ID token's check first: the IdP has spent the old token, and
   losing the new one would make the next refresh present the spent one (``bff.tokens.spending``).

Token exchange (RFC 8693). A route with ``exchange`` gets its token through the same flight, keyed by the route: the
same lock, reload-and-recheck and compare-and-set; under the lock the login's token is refreshed and stored first
(steps 2 and 5-7) when it expires soon, then exchanged (``bff.tokens.exchange_flight``). A refused, failed or
cancelled exchange never loses the login's tokens refreshed for it, and a refused one never ends the session.

Deadlines. A request waits for a refresh at most ``[oidc] timeout`` (the user-facing deadline), then answers 503
``temporarily_unavailable`` with ``Retry-After: 1``. The refresh itself goes on, holding and renewing the lock, until
the IdP answers or ``[tokens] refresh_timeout`` passes, and stores what the IdP answered: the session's next request
finds the rotated tokens, or joins the refresh still in flight (this process), or sees the lock and waits (another
process). So an IdP slower than a browser's patience never makes bff present a refresh token twice, which an IdP
with reuse detection (RFC 9700 4.14.2) would answer by revoking the whole family. Nothing waits on a cancellation
being honoured: the lock renewer stops on a flag (a cancel only wakes it early; CPython 3.11's ``asyncio.wait_for``,
which redis-py uses, can swallow one), every wait for a task is bounded (``asyncio.wait`` with a timeout), the
renewer stops renewing once the refresh overran its deadline (so no lock outlives ``refresh_timeout`` plus a lease),
and a flight still running past its deadline is abandoned and replaced. A flight the shutdown cancels answers
the requests waiting on it (not cancelled themselves) as their deadline would: 503 ``temporarily_unavailable``.

Metrics: each request that needs a refresh counts once in ``bff_token_refresh_total`` by what it got, and its wait
in ``bff_token_refresh_duration_seconds``. ``ok`` when its flight called the IdP; ``joined`` when it used a refresh
it did not make (it joined a flight of this process, or its flight found another process's result); a failure by
what the flight recorded (``Attempt``) or, failing that, by its class.

What remains: an IdP that takes the refresh token and never answers. At ``refresh_timeout`` the refresh is abandoned
with its outcome unknown; the next attempt presents the same refresh token. An IdP with a reuse grace window (Auth0's
"reuse interval", Okta's grace period; ``bff devidp --refresh-reuse-grace``) accepts it; one without ends the
session (401 ``session_expired``, log in again). Choose ``refresh_timeout`` above the IdP's worst answer time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import get_args

from bff.config import RouteSettings, TokenSettings
from bff.errors import (
    IdPUnavailable,
    OAuthError,
    SessionExpired,
    SessionStoreUnavailable,
    TokenExchangeRefused,
)
from bff.models import Session, TokenSet
from bff.oidc.provider import IdentityProvider
from bff.session.manager import LoadedSession, SessionManager
from bff.telemetry import metrics
from bff.tokens.exchange_flight import Exchanger, count_exchange
from bff.tokens.flight import POLL_MAX, POLL_MIN, Attempt, FlightContext, RefreshOutcome, refresh_timeout, retry_soon
from bff.tokens.idp_probe import IdPProbe
from bff.tokens.rotation import Check, Rotation
from bff.tokens.route_tokens import expiring, route_token_key, tokens_for
from bff.tokens.spending import Spender
from bff.types import Clock

logger = logging.getLogger("bff.tokens")

#: How long stopping a background task (lock renewer, probe) waits for it; a store or IdP call it is inside is
#: bounded by its own timeout, and nothing depends on it having stopped.
STOP_GRACE = 0.5

FlightKey = tuple[str, str | None]
_OUTCOMES = {outcome: metrics.TOKEN_REFRESH.labels(outcome=outcome) for outcome in get_args(RefreshOutcome)}
_DURATION = metrics.TOKEN_REFRESH_DURATION.labels()


@dataclasses.dataclass(slots=True)
class _Flight:
    """One session's refresh in this process: the task every caller joins, and when it counts as stuck."""

    task: asyncio.Task[LoadedSession]
    #: Loop time after which the task has overrun every deadline (a lost cancellation) and is replaced.
    abandon_at: float
    attempt: Attempt


class Refresher:
    def __init__(
        self,
        sessions: SessionManager,
        idp: IdentityProvider,
        settings: TokenSettings,
        *,
        clock: Clock,
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self.sessions = sessions
        self.idp = idp
        self.settings = settings
        self.clock = clock
        self._sleep = sleep
        self._inflight: dict[FlightKey, _Flight] = {}
        self.probe = IdPProbe(idp, io_timeout=self._refresh_timeout)
        context = FlightContext(sessions, idp, self.probe, settings)
        self._spender = Spender(context, sleep=sleep)
        self._rotation = Rotation(context, self._spender)
        self._exchanger = Exchanger(context, clock=clock)

    async def refresh(
        self, loaded: LoadedSession, route: RouteSettings | None = None, *, stale_access_token: str | None
    ) -> LoadedSession:
        """Refresh single-flight (see the module docstring). Returns the session with fresh tokens, or raises
        ``IdPUnavailable`` at the request's deadline while the refresh goes on."""
        start = perf_counter()
        route_key = route_token_key(route) if route is not None else None
        key = (loaded.key, route_key)
        loop = asyncio.get_running_loop()
        flight = self._inflight.get(key)
        joined = flight is not None and loop.time() <= flight.abandon_at
        if flight is None or not joined:
            attempt = Attempt()
            task = loop.create_task(
                self._refresh_across_processes(loaded, route, route_key, stale_access_token, attempt)
            )
            flight = _Flight(task, loop.time() + self._flight_limit, attempt)
            self._inflight[key] = flight
            task.add_done_callback(functools.partial(self._landed, key, flight))
        # Not ``await task``: this request stops waiting at its deadline, and the task is not cancelled with it.
        done, _ = await asyncio.wait({flight.task}, timeout=self.idp.settings.timeout)
        outcome: RefreshOutcome = "error"
        refusal: TokenExchangeRefused | None = None
        try:
            if not done:
                outcome = "idp_unavailable"
                raise retry_soon("the identity provider has not answered the token refresh yet; it goes on")
            if flight.task.cancelled():
                # The shutdown stopped the shared flight, not this request: answer it, never re-raise the flight's
                # CancelledError here (the session is kept; the next request, maybe on another pod, refreshes).
                outcome = "idp_unavailable"
                raise retry_soon("the token refresh was stopped: bff is shutting down; try again")
            try:
                result = flight.task.result()
            except IdPUnavailable:
                outcome = flight.attempt.failure or "idp_unavailable"
                raise
            except TokenExchangeRefused as exc:
                refusal = exc
                raise
            except Exception:
                outcome = flight.attempt.failure or "error"
                raise
            outcome = "joined" if joined or flight.attempt.joined else "ok"
            return result
        finally:
            if route is not None and route.exchange is not None:
                count_exchange(outcome, refusal)
            else:
                _OUTCOMES[outcome].inc()
                _DURATION.observe(perf_counter() - start)

    def joins(self, loaded: LoadedSession, route: RouteSettings | None = None) -> bool:
        """Whether :meth:`refresh` called now would join a refresh of this session already running in this
        process (rather than start one)."""
        key = (loaded.key, route_token_key(route) if route is not None else None)
        flight = self._inflight.get(key)
        return flight is not None and asyncio.get_running_loop().time() <= flight.abandon_at

    def in_flight(self) -> list[asyncio.Task[LoadedSession]]:
        """The refreshes running in this process (for shutdown)."""
        return [flight.task for flight in self._inflight.values()]

    def storing(self) -> dict[asyncio.Task[LoadedSession | None], float]:
        """The writes of rotated tokens still running, each with its deadline (for shutdown: see ``Spender``)."""
        return self._spender.storing()

    @property
    def refresh_count(self) -> int:
        """Refresh calls this process made to the IdP (for the demo SPA's "refreshed" indicator and tests)."""
        return self._spender.refresh_count

    @property
    def exchange_count(self) -> int:
        """Token exchanges (RFC 8693) this process made at the IdP."""
        return self._exchanger.exchange_count

    @property
    def _refresh_timeout(self) -> float:
        return refresh_timeout(self.settings, self.idp)

    @property
    def _flight_limit(self) -> float:
        """Longest a refresh task can legitimately run: polling for another holder, then the IdP call, plus a few
        store round trips (bounded by their own timeouts; a lease stands for them)."""
        return self.idp.settings.timeout + self._refresh_timeout + 3 * self.settings.refresh_lock_lease

    def _landed(self, key: FlightKey, flight: _Flight, task: asyncio.Task[LoadedSession]) -> None:
        if self._inflight.get(key) is flight:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # seen: a refresh whose waiters all gave up must not log "exception never retrieved"

    def _settled(self, loaded: LoadedSession, route: RouteSettings | None, stale: str | None) -> bool:
        """True when the session now holds a token other than the stale one this caller saw: someone refreshed.
        (Comparing tokens, not expiry, keeps an IdP that issues tokens shorter than the leeway from causing a
        refresh per waiter.)"""
        tokens = tokens_for(loaded, route)
        if tokens is None:
            return False
        if stale is not None:
            return tokens.access_token != stale
        return not expiring(tokens, self.settings.refresh_leeway, self.clock)

    async def _refresh_across_processes(
        self,
        loaded: LoadedSession,
        route: RouteSettings | None,
        route_key: str | None,
        stale: str | None,
        attempt: Attempt,
    ) -> LoadedSession:
        exchanging = route is not None and route.exchange is not None
        if not exchanging and not loaded.session.tokens.refresh_token:
            await self.sessions.delete(loaded, reason="expired")
            raise SessionExpired("the access token expired and the session has no refresh token")
        lease = self.settings.refresh_lock_lease
        lock_key = self.sessions.refresh_lock_key(loaded.key)
        loop = asyncio.get_running_loop()
        # A waiter polls as long as a request waits; the session's next request polls again if the holder (another
        # process, maybe with a slow IdP) is still at it, and a holder that died releases by expiry.
        deadline = loop.time() + self.idp.settings.timeout
        poll = POLL_MIN
        while True:
            owner = await self.sessions.store.lock(lock_key, lease)
            if owner is not None:
                break
            # Another process is refreshing this session: wait for its result instead of spending the token.
            current = await self._current(loaded)
            if self._settled(current, route, stale):
                attempt.joined = True
                return current
            if loop.time() > deadline:
                raise retry_soon("another instance is still refreshing this session's tokens")
            await self._sleep(poll)
            poll = min(poll * 2, POLL_MAX)
        stop = asyncio.Event()
        renew_until = loop.time() + self._refresh_timeout + lease
        renewer = loop.create_task(self._renew(lock_key, owner, lease, stop, renew_until))
        try:
            current = await self._current(loaded)  # reload and check again, under the lock
            if self._settled(current, route, stale):
                attempt.joined = True
                return current
            return await self._refresh_locked(current, route, route_key, attempt, write_until=renew_until)
        finally:
            stop.set()
            renewer.cancel()  # only wakes it early: should the cancellation be lost, it sees the flag and returns
            await _bounded_wait(renewer, "the refresh lock's renewer")
            await self._unlock(lock_key, owner)

    async def _current(self, loaded: LoadedSession) -> LoadedSession:
        current = await self.sessions.load_key(loaded.key, strict=True)
        if current is None:
            raise SessionExpired("the session ended (logged out elsewhere or expired)")
        return current

    async def _renew(self, lock_key: str, owner: str, lease: float, stop: asyncio.Event, until: float) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            await asyncio.sleep(lease / 3)
            if stop.is_set():
                return
            if loop.time() > until:
                logger.warning("a token refresh overran its deadline; its lock is left to expire")
                return
            try:
                renewed = await self.sessions.store.extend_lock(lock_key, owner, lease)
            except SessionStoreUnavailable as exc:
                logger.warning("could not renew the refresh lock (trying again): %s", exc.message)
                continue
            if not renewed:
                logger.warning("lost the refresh lock while refreshing (the store may have restarted)")
                return

    async def _unlock(self, lock_key: str, owner: str) -> None:
        try:
            await self.sessions.store.unlock(lock_key, owner)
        except SessionStoreUnavailable as exc:
            logger.warning("could not release the refresh lock (its lease frees it): %s", exc.message)

    async def _refresh_locked(
        self,
        current: LoadedSession,
        route: RouteSettings | None,
        route_key: str | None,
        attempt: Attempt,
        *,
        write_until: float,
    ) -> LoadedSession:
        spent = current.session.tokens.refresh_token or ""
        try:
            if route is not None and route.exchange is not None:
                assert route_key is not None
                # The login's refresh is this flight's means, not its outcome: its own attempt, not counted.
                current, updated = await self._exchanger.exchanged(
                    current, route, route_key, lambda loaded: self._login_refreshed(loaded, Attempt(), write_until)
                )
            elif route_key is None:
                return await self._login_refreshed(current, attempt, write_until)
            else:
                current = await self._adopted(current, attempt, write_until)
                spent = current.session.tokens.refresh_token or ""
                updated = await self._rotation.route_session(current, route, route_key, attempt)
            return await self._written(current, updated, None, write_until)
        finally:
            self._spender.forget(spent)

    async def _login_refreshed(self, current: LoadedSession, attempt: Attempt, write_until: float) -> LoadedSession:
        """The login's tokens refreshed and stored, the refreshed ID token checked by the write (OpenID Connect Core
        12.2): nothing between the IdP's answer and the write can be cancelled (RFC 9700 4.14.2)."""
        result, check = await self._rotation.login_tokens(current, attempt)
        # With the refresh result stored, stragglers holding the spent token find it, even before the session write.
        updated = current.session.evolve(tokens=result)
        return await self._written(current, updated, result, write_until, check=check)

    async def _written(
        self,
        current: LoadedSession,
        updated: Session,
        result: TokenSet | None,
        write_until: float,
        *,
        check: Check | None = None,
    ) -> LoadedSession:
        """``updated`` stored in place of ``current`` (``Spender.store_rotated``), or the session as it is now."""
        spent = current.session.tokens.refresh_token or ""
        written = await self._spender.store_rotated(current, updated, spent, result, write_until, check=check)
        return written if written is not None else await self._reloaded(current, updated)

    async def _adopted(self, current: LoadedSession, attempt: Attempt, write_until: float) -> LoadedSession:
        """When a refresh spent the session's refresh token and stored its result but not the session: the session
        with the login's tokens from that result, stored (else ``current``). A route's own refresh then presents
        the new refresh token, never the spent one (RFC 9700 4.14.2)."""
        remembered = await self._rotation.remembered(current, attempt)
        if remembered is None:
            return current
        spent = current.session.tokens.refresh_token or ""
        adopted = current.session.evolve(tokens=remembered)
        written = await self._spender.store_rotated(current, adopted, spent, None, write_until)
        if written is None:
            await self._reloaded(current, adopted)
            raise retry_soon("another refresh stored this session's new tokens just now")
        return written

    async def _reloaded(self, current: LoadedSession, updated: Session) -> LoadedSession:
        """After a compare-and-set that found the record changed: the session as it is now, or ``SessionExpired``
        when it was deleted (logout, back-channel logout) despite the lock, never resurrected."""
        # Strict: a record rewritten by a newer release has not ended, and its refresh token must live on.
        if await self.sessions.load_key(current.key, strict=True) is None:
            await self._revoke_quietly(updated.tokens.refresh_token)
            raise SessionExpired("the session ended while its tokens were being refreshed")
        return await self._current(current)

    async def _revoke_quietly(self, refresh_token: str | None) -> None:
        if not refresh_token:
            return
        try:
            await self.idp.client.revoke(refresh_token, "refresh_token")
        except OAuthError as exc:
            logger.info("could not revoke an orphaned refresh token: %s", exc.error)


async def _bounded_wait(task: asyncio.Task[None], what: str) -> None:
    """Wait for a stopping background task at most ``STOP_GRACE``; never raises what it raised (logged instead)."""
    done, _ = await asyncio.wait({task}, timeout=STOP_GRACE)
    if not done:
        logger.warning("%s did not stop in time; left to finish on its own", what)
    elif not task.cancelled() and (exc := task.exception()) is not None:
        logger.error("%s failed", what, exc_info=exc)
