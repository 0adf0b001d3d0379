"""The spending mark against a real Redis that fails at the worst moment (a relay resets its connections, or the
server is SIGSTOPped), with the real test OpenID Provider rotating refresh tokens and revoking the family on reuse.

The mark says a refresh token is being presented to the IdP. Each case checks the three promises of
``bff.tokens.spending``: no refresh token is presented twice; once the store is back, the holder stores its result
(and clears its mark) or renounces its mark, so the session's next request is served instead of answering 503
until the mark expires; and nothing is left behind."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

import pytest
import redis.asyncio

from bff.config import RouteSettings, TokenSettings
from bff.errors import IdPUnavailable, SessionExpired, SessionStoreUnavailable
from bff.session.manager import LoadedSession
from bff.session.redis_store import RedisStore
from tests.faults.relay import Relay
from tests.support.oidc_provider import TestProvider, running
from tests.support.redis_server import RedisProcess
from tests.support.token_env import TokenEnv, token_env

pytestmark = pytest.mark.redis

ROUTE = RouteSettings(path="/api", upstream="https://api.example.net")
#: The store's timeout here: short, so that a write into a dead connection fails quickly.
STORE_TIMEOUT = 0.3
#: How long the store stays away once the fault hit (from a timer thread, whatever bff is doing meanwhile).
OUTAGE = 0.6
#: The refresh lock's lease: a lock whose release was lost in the outage frees itself this long after.
SETTINGS = TokenSettings(refresh_lock_lease=0.3)


class FaultyStore(RedisStore):
    """A real ``RedisStore``; the first write to a key starting with ``fault_prefix`` meets the fault ``mode``:

    * ``answer_lost``: the write reaches Redis, which applies it; its answer is held past the store's timeout, then
      every connection is reset and new ones are refused (a partition) until a timer revives the relay ``OUTAGE``
      later;
    * ``lost``: the same partition, but the write never reached Redis;
    * ``late``: the write fails at once, and reaches Redis only ``OUTAGE`` later (a write delayed in a stalled
      server or a relay); the store works meanwhile."""

    fault_prefix = ""
    mode: Literal["answer_lost", "lost", "late"] = "answer_lost"
    relay: Relay
    hits = 0
    landed: asyncio.Task[Any] | None = None

    def _arm(self, key: str) -> bool:
        hit = bool(self.fault_prefix) and key.startswith(self.fault_prefix) and not self.hits
        self.hits += hit
        return hit

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if self._arm(key):
            await self._fault(super().set(key, value, ttl))
        await super().set(key, value, ttl)

    async def set_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        if self._arm(key):
            await self._fault(super().set_if_absent(key, value, ttl))
        return await super().set_if_absent(key, value, ttl)

    async def _fault(self, write: Coroutine[Any, Any, Any]) -> NoReturn:
        if self.mode == "late":
            self.landed = asyncio.create_task(self._later(write))
            raise SessionStoreUnavailable("session store: no answer (test fault)")
        if self.mode == "lost":
            write.close()  # never sent
        else:
            self.relay.slow(STORE_TIMEOUT * 3)
            try:
                await write
            except SessionStoreUnavailable:
                pass
            else:  # pragma: no cover - the answer is held past the timeout
                pytest.fail("the write was confirmed although its answer was held")
            self.relay.slow(0)
        self.relay.kill()
        threading.Timer(OUTAGE, self.relay.revive).start()
        raise SessionStoreUnavailable("session store: answer lost (test fault)")

    @staticmethod
    async def _later(write: Coroutine[Any, Any, Any]) -> Any:
        await asyncio.sleep(OUTAGE)
        return await write


@dataclass
class World:
    env: TokenEnv
    store: FaultyStore
    relay: Relay


@pytest.fixture
def provider() -> Iterator[TestProvider]:
    with running(TestProvider(access_token_ttl=300)) as provider:
        yield provider


@pytest.fixture
async def world(provider: TestProvider, redis_process: RedisProcess) -> AsyncIterator[World]:
    relay = Relay(redis_process.port).start()
    store = FaultyStore.from_url(f"redis://{relay.url_host}/0", timeout=STORE_TIMEOUT)
    assert isinstance(store, FaultyStore)
    store.relay = relay
    try:
        async with token_env(provider, store) as env:
            yield World(env, store, relay)
    finally:
        await store.aclose()
        relay.close()


async def _logged_in_and_expired(env: TokenEnv) -> tuple[str, LoadedSession]:
    """A new session whose access token has expired: its refresh token (the one a refresh spends) and the session."""
    _, stale = await env.expired_login()
    spent = stale.session.tokens.refresh_token
    assert spent is not None
    return spent, stale


async def _mark(world: World, refresh_token: str) -> bytes | None:
    return await world.store.get(world.env.sessions.spending_key(refresh_token))


async def test_a_mark_whose_answer_was_lost_does_not_block_the_session_once_the_store_is_back(world: World) -> None:
    """The mark lands in Redis but its answer is lost and the store goes away (a partition): the IdP is not
    asked, and the mark cannot be removed yet. Once the store is back the holder renounces it, so the session's
    next request refreshes at once instead of answering 503 ("another refresh spent ...") until the mark expires."""
    env, store = world.env, world.store
    manager = await env.manager(SETTINGS, oidc_timeout=OUTAGE * 4)
    spent, stale = await _logged_in_and_expired(env)
    store.fault_prefix = "p:"  # the spending mark
    with pytest.raises(SessionStoreUnavailable):
        await asyncio.wait_for(manager.access_token(stale, ROUTE), 5)
    assert store.hits == 1
    assert env.provider.refresh_calls == 0  # never presented: its mark was not confirmed
    await asyncio.sleep(OUTAGE + 0.1)  # the store is back
    token = await asyncio.wait_for(manager.access_token(stale, ROUTE), 5)
    assert token != stale.session.tokens.access_token
    assert env.provider.refresh_calls == 1
    assert env.provider.reuse_detected == 0
    assert await _mark(world, spent) is None  # cleared once the result was stored


@pytest.mark.parametrize("mode", ["answer_lost", "lost"])
async def test_a_result_whose_write_was_lost_is_written_again_and_the_mark_cleared(
    world: World, mode: Literal["answer_lost", "lost"]
) -> None:
    """The IdP rotated the refresh token, then the result's write is lost and the store goes away: the holder
    writes it again once the store is back (within its deadline), another process reads it instead of answering
    503 or presenting the spent token, and the mark is cleared."""
    env, store = world.env, world.store
    here = await env.manager(SETTINGS, oidc_timeout=OUTAGE * 4)
    there = await env.manager(SETTINGS, oidc_timeout=OUTAGE * 4)
    spent, stale = await _logged_in_and_expired(env)
    store.fault_prefix, store.mode = "r:", mode  # the refresh result, written once the IdP answered
    token = await asyncio.wait_for(here.access_token(stale, ROUTE), 5)
    assert token != stale.session.tokens.access_token
    assert store.hits == 1
    assert await asyncio.wait_for(there.access_token(stale, ROUTE), 5) == token
    assert env.provider.refresh_calls == 1
    assert env.provider.reuse_detected == 0
    assert await _mark(world, spent) is None


async def test_a_mark_that_lands_after_it_was_renounced_holds_nothing_back(world: World) -> None:
    """The mark's write goes unanswered and reaches Redis only after its holder renounced it (a write delayed in a
    stalled server or a relay): the late mark would block the session until it expires; the renouncement outlives
    it, so the next refresher removes it and refreshes."""
    env, store = world.env, world.store
    manager = await env.manager(SETTINGS, oidc_timeout=OUTAGE * 4)
    spent, stale = await _logged_in_and_expired(env)
    store.fault_prefix, store.mode = "p:", "late"
    with pytest.raises(SessionStoreUnavailable):
        await asyncio.wait_for(manager.access_token(stale, ROUTE), 5)
    assert store.landed is not None
    assert await asyncio.wait_for(store.landed, 5)  # the late mark is in Redis now
    assert await _mark(world, spent) is not None
    token = await asyncio.wait_for(manager.access_token(stale, ROUTE), 5)
    assert token != stale.session.tokens.access_token
    assert env.provider.refresh_calls == 1
    assert env.provider.reuse_detected == 0
    assert await _mark(world, spent) is None


async def test_a_result_lost_past_the_refresh_deadline_ends_the_session_once_the_mark_expires(world: World) -> None:
    """The residual case of docs/redis-ha.md: the store stays away longer than the refresh deadline, so the holder
    gives up with the rotated tokens unstored. The session answers 503 while the mark lives; once it expired, the
    next refresh presents the spent token, the IdP detects the reuse and revokes the family, and the session ends
    (401, log in again) rather than answering 503 for ever."""
    env, store = world.env, world.store
    deadline = TokenSettings(refresh_lock_lease=0.1, refresh_timeout=0.2)  # the holder gives up well within OUTAGE
    manager = await env.manager(deadline, oidc_timeout=0.2)
    session_id, stale = await env.expired_login()
    store.fault_prefix, store.mode = "r:", "lost"
    with pytest.raises((IdPUnavailable, SessionStoreUnavailable)):
        await asyncio.wait_for(manager.access_token(stale, ROUTE), 5)
    await asyncio.sleep(OUTAGE + 0.2)  # the store is back, the holder gave up, its mark expired
    with pytest.raises(SessionExpired):
        await asyncio.wait_for(manager.access_token(stale, ROUTE), 5)
    assert env.provider.refresh_calls == 2
    assert env.provider.reuse_detected == 1
    assert await env.sessions.load(session_id) is None


async def test_a_refresh_result_outlives_the_spending_mark(world: World, redis_process: RedisProcess) -> None:
    """A straggler that finds the mark expired must still find the result: were the result gone first, it would
    present the spent refresh token and the IdP would revoke the family. So the result lives at least as long as the
    longest mark, whatever the refresh deadline."""
    env = world.env
    lease = 2.0
    manager = await env.manager(TokenSettings(refresh_lock_lease=lease), oidc_timeout=120)
    spent, stale = await _logged_in_and_expired(env)
    await asyncio.wait_for(manager.access_token(stale, ROUTE), 5)
    client = redis.asyncio.Redis.from_url(redis_process.url)
    try:
        result_ttl = await client.pttl(world.store._prefix + env.sessions._result_key(spent)) / 1000
    finally:
        await client.aclose()
    mark_ttl = 120 + 2 * lease  # the refresh deadline (the IdP timeout here) plus two leases
    assert result_ttl > mark_ttl
