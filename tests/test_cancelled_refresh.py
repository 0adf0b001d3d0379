"""A refresh cancelled after the IdP answered, against a real Redis and the real test OpenID Provider (rotating
refresh tokens, revoking the whole family when one is presented again).

The IdP has spent the old refresh token once it answered: the write of what it answered (refresh result, session,
mark cleared) must land even when the flight is cancelled meanwhile (a shutdown past ``shutdown_timeout``), and a
browser that leaves must not cancel the flight other requests share. Each case holds the first write of the refresh
result until the cancellation was delivered, then checks the session holds the new tokens and no refresh token
reached the IdP twice. Two more hold the steps between the IdP's answer and that write: the refreshed ID token's
check (its JWKS fetch), and a token exchange (RFC 8693) made after the login's token was refreshed for it.

The requests waiting on a flight the shutdown cancels were not cancelled themselves: each gets a 503
``temporarily_unavailable`` with ``Retry-After`` (as at its deadline), never the flight's ``CancelledError``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import Literal
from uuid import uuid4

import pytest

from bff.config import ExchangeSettings, RouteSettings, TokenSettings
from bff.endpoints.common import json_error
from bff.errors import IdPUnavailable
from bff.session.redis_store import RedisStore
from bff.tokens.manager import TokenManager
from bff.tokens.refresh import STOP_GRACE
from tests.support.metric_deltas import MetricDeltas
from tests.support.oidc_provider import TestProvider
from tests.support.token_env import TokenEnv, token_env
from tests.test_rotated_tokens import EXCHANGE_GRANT, grants_since, presented_refresh_tokens

pytestmark = pytest.mark.redis

ROUTE = RouteSettings(path="/api", upstream="https://api.example.net")
#: A route whose token the IdP exchanges (RFC 8693): its flight refreshes the login's token first.
ORDERS = RouteSettings(path="/orders", upstream="https://orders.example.net", exchange=ExchangeSettings("orders-api"))


class HeldStore(RedisStore):
    """A real ``RedisStore`` whose first write of a refresh result (``r:`` key) waits until ``release`` is set;
    ``reached`` says it is waiting."""

    reached: asyncio.Event
    release: asyncio.Event
    held = 0

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if key.startswith("r:") and not self.held:
            self.held += 1
            self.reached.set()
            await self.release.wait()
        await super().set(key, value, ttl)


@pytest.fixture
async def held(redis_url: str) -> AsyncIterator[HeldStore]:
    store = HeldStore.from_url(redis_url, prefix=f"t{uuid4().hex}:")
    assert isinstance(store, HeldStore)
    store.reached, store.release = asyncio.Event(), asyncio.Event()
    try:
        yield store
    finally:
        store.release.set()
        await store.aclose()


@pytest.fixture
async def env(idp: TestProvider, held: HeldStore) -> AsyncIterator[TokenEnv]:
    async with token_env(idp, held) as env:
        yield env


async def _shut_down_cancelling_the_flight(manager: TokenManager, release: Callable[[], object]) -> None:
    """Stop ``manager`` with its shutdown grace spent, so the refresh flight is cancelled; once the cancellation was
    delivered, ``release`` lets go of what the test held (the IdP's answer, a write). Returns when the shutdown
    ended."""
    running = asyncio.all_tasks()
    closing = asyncio.create_task(manager.aclose(grace=0))
    await asyncio.wait_for(_cancellation_delivered(running), 5)
    release()
    await asyncio.wait_for(closing, 5)


async def _cancellation_delivered(tasks: set[asyncio.Task[object]]) -> None:
    """Until one of ``tasks`` (the flight among them) has been asked to cancel."""
    while not any(task.cancelling() for task in tasks):  # noqa: ASYNC110 - no event to wait on
        await asyncio.sleep(0.01)


async def _assert_rotated_and_stored(env: TokenEnv, session_id: str, spent: str) -> str:
    """The session holds the rotated tokens, the mark is cleared, and the next refresh (another process) presents
    the new refresh token: the IdP saw each refresh token once and detected no reuse. Returns the new access
    token."""
    stored = await env.sessions.load(session_id)
    assert stored is not None, "the session lives on"
    rotated = stored.session.tokens.refresh_token
    assert rotated not in (None, spent), "the rotated refresh token was stored"
    assert await env.sessions.store.get(env.sessions.spending_key(spent)) is None, "the mark was cleared"
    other = await env.manager()
    expired = await env.expire_access_token(session_id)
    assert await asyncio.wait_for(other.access_token(expired, ROUTE), 5) != expired.session.tokens.access_token
    assert presented_refresh_tokens(env.provider) == [spent, rotated]
    assert env.provider.reuse_detected == 0
    return stored.session.tokens.access_token


@pytest.mark.parametrize("release", ["at_once", "after_stop_grace"])
async def test_a_shutdown_cancelling_the_flight_after_the_idp_answered_still_stores_the_rotated_tokens(
    env: TokenEnv, held: HeldStore, release: Literal["at_once", "after_stop_grace"]
) -> None:
    """The shutdown cancels a flight whose IdP call has answered while its write is still on the way (a store
    slower than the shutdown's grace, too): the write lands all the same, and the shutdown waits for it, instead of
    leaving the spent refresh token in the session for the next refresh to present (reuse: the family revoked, the
    user logged out)."""
    manager = await env.manager()
    session_id, stale = await env.expired_login()
    spent = stale.session.tokens.refresh_token
    assert spent is not None
    request = asyncio.create_task(manager.access_token(stale, ROUTE))
    await asyncio.wait_for(held.reached.wait(), 5)  # the IdP answered; the result's write is on its way
    assert presented_refresh_tokens(env.provider) == [spent]
    if release == "at_once":
        await _shut_down_cancelling_the_flight(manager, held.release.set)
    else:  # later than the shutdown waits for a cancelled flight to stop
        loop = asyncio.get_running_loop()
        await _shut_down_cancelling_the_flight(manager, lambda: loop.call_later(2 * STOP_GRACE, held.release.set))
    assert held.release.is_set(), "the shutdown waited for the write"
    await asyncio.wait({request}, timeout=5)
    assert request.done()
    await _assert_rotated_and_stored(env, session_id, spent)


async def _until_presented(condition: Callable[[], bool]) -> None:
    while not condition():  # noqa: ASYNC110 - the IdP runs in another thread
        await asyncio.sleep(0.01)


async def test_a_shutdown_cancelling_the_flight_while_the_refreshed_id_token_is_checked_still_stores_the_rotated_tokens(
    env: TokenEnv, held: HeldStore
) -> None:
    """The refreshed ID token is signed with a key bff has not seen, so its check (OpenID Connect Core 12.2) fetches
    the JWKS, which the IdP holds until the shutdown has cancelled the flight, and later than the shutdown waits for
    a cancelled flight to stop. The check and the write go on all the same, and the shutdown waits for them."""
    held.release.set()  # the store writes at once: the step held is the JWKS fetch
    manager = await env.manager()
    session_id, stale = await env.expired_login()
    env.provider.rotate_key()  # the refreshed ID token names a kid bff's JWKS cache does not hold
    gate = threading.Event()
    env.provider.jwks_gate = gate
    spent = stale.session.tokens.refresh_token
    assert spent is not None
    fetches = env.provider.jwks_requests
    try:
        request = asyncio.create_task(manager.access_token(stale, ROUTE))
        await asyncio.wait_for(_until_presented(lambda: env.provider.jwks_requests > fetches), 5)
        assert presented_refresh_tokens(env.provider) == [spent], "the IdP answered the refresh"
        loop = asyncio.get_running_loop()
        await _shut_down_cancelling_the_flight(manager, lambda: loop.call_later(2 * STOP_GRACE, gate.set))
        assert gate.is_set(), "the shutdown waited for the check and the write"
    finally:
        gate.set()
    await asyncio.wait({request}, timeout=5)
    assert request.done()
    await _assert_rotated_and_stored(env, session_id, spent)


async def test_a_shutdown_cancelling_an_exchange_after_the_login_refresh_still_stores_the_rotated_tokens(
    env: TokenEnv, held: HeldStore
) -> None:
    """An exchange route's flight refreshes the login's expired token first (the IdP rotates the refresh token),
    then the IdP holds the exchange's answer until the shutdown has cancelled the flight. The rotated login tokens
    are in the store all the same, and the next refresh presents the new refresh token."""
    held.release.set()  # the store writes at once: the step held is the exchange
    manager = await env.manager()
    session_id, stale = await env.expired_login()
    gate = threading.Event()
    env.provider.exchange_gate = gate
    spent = stale.session.tokens.refresh_token
    assert spent is not None
    start = len(env.provider.token_requests)
    try:
        request = asyncio.create_task(manager.access_token(stale, ORDERS))
        await asyncio.wait_for(_until_presented(lambda: EXCHANGE_GRANT in grants_since(env.provider, start)), 5)
        assert grants_since(env.provider, start) == ["refresh_token", EXCHANGE_GRANT]
        # The exchange answers once the flight was cancelled.
        await _shut_down_cancelling_the_flight(manager, gate.set)
    finally:
        gate.set()
    await asyncio.wait({request}, timeout=5)
    assert request.done()
    await _assert_rotated_and_stored(env, session_id, spent)


async def test_a_write_that_never_lands_does_not_hold_the_shutdown_past_the_refresh_deadline(
    env: TokenEnv, held: HeldStore
) -> None:
    """The write the shutdown waits for is bounded by the refresh deadline: a store that never answers cannot keep
    the process from stopping."""
    manager = await env.manager(TokenSettings(refresh_timeout=0.5, refresh_lock_lease=0.3), oidc_timeout=0.5)
    _, stale = await env.expired_login()
    request = asyncio.create_task(manager.access_token(stale, ROUTE))
    await asyncio.wait_for(held.reached.wait(), 5)
    await asyncio.wait_for(manager.aclose(grace=0), 5)
    assert not held.release.is_set()
    left = asyncio.all_tasks() - {asyncio.current_task()}
    held.release.set()  # the write, left to finish on its own, ends now
    await asyncio.wait(left, timeout=5)
    assert request.done()
    assert all(task.done() for task in left)


async def test_a_browser_that_leaves_does_not_cancel_the_flight_another_request_shares(
    env: TokenEnv, held: HeldStore
) -> None:
    """The flight runs in a task of its own: cancelling the request that started it (its browser left) neither
    cancels the write of the rotated tokens nor fails the request that joined it."""
    manager = await env.manager()
    session_id, stale = await env.expired_login()
    spent = stale.session.tokens.refresh_token
    assert spent is not None
    leaving = asyncio.create_task(manager.access_token(stale, ROUTE))
    await asyncio.wait_for(held.reached.wait(), 5)
    staying = asyncio.create_task(manager.access_token(stale, ROUTE))
    await asyncio.sleep(0)  # the second request joins the flight
    leaving.cancel()
    await asyncio.wait({leaving}, timeout=5)
    assert leaving.cancelled()
    held.release.set()
    token = await asyncio.wait_for(staying, 5)
    assert env.provider.refresh_calls == 1
    assert token == await _assert_rotated_and_stored(env, session_id, spent)


@pytest.mark.parametrize(
    ("route", "counter"),
    [(ROUTE, "bff_token_refresh_total"), (ORDERS, "bff_token_exchange_total")],
    ids=["refresh", "exchange"],
)
async def test_requests_waiting_on_a_flight_the_shutdown_cancels_are_answered_503(
    env: TokenEnv, route: RouteSettings, counter: str
) -> None:
    """The IdP holds its answer; the request that started the flight and one that joined it are waiting when the
    shutdown (``shutdown_timeout`` spent) cancels the flight. Neither request was cancelled: each gets the 503 a
    request gets at its deadline, saying the refresh was stopped, and counts ``idp_unavailable`` once."""
    manager = await env.manager()
    _, stale = await env.expired_login()
    gate = threading.Event()
    env.provider.token_gate = gate
    deltas = MetricDeltas()
    try:
        started = asyncio.create_task(manager.access_token(stale, route))
        while not presented_refresh_tokens(env.provider):  # noqa: ASYNC110 - the IdP runs in another thread
            await asyncio.sleep(0.01)
        assert manager._refresher.joins(stale, route)
        joined = asyncio.create_task(manager.access_token(stale, route))
        await asyncio.sleep(0)  # the second request joins the flight and waits on it
        await asyncio.wait_for(manager.aclose(grace=0), 5)
        await asyncio.wait({started, joined}, timeout=5)
    finally:
        gate.set()
    for request in (started, joined):
        assert request.done()
        assert not request.cancelled(), "the request was not cancelled: it answers"
        error = request.exception()
        assert isinstance(error, IdPUnavailable)
        assert "shutting down" in error.message
        response = json_error(error)
        assert response.status_code == 503
        assert json.loads(bytes(response.body))["error"] == "temporarily_unavailable"
        assert response.headers["retry-after"] == "1"
    assert presented_refresh_tokens(env.provider) == [stale.session.tokens.refresh_token], "one flight, shared"
    assert deltas.by(counter, "outcome") == {"idp_unavailable": 2}
    other = "bff_token_exchange_total" if counter == "bff_token_refresh_total" else "bff_token_refresh_total"
    assert deltas.changes(other) == {}
