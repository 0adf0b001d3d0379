"""Token refresh: single-flight in a process and across 'processes' (TokenManagers sharing one store), rotation,
and which failures end the session. The IdP is the real test provider over HTTP, rotating refresh tokens and
revoking the whole family on reuse."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from bff.config import ExchangeSettings, RouteSettings, TokenSettings
from bff.errors import IdPUnavailable, SessionExpired, SessionStoreUnavailable, TokenExchangeRefused, Unauthenticated
from bff.models import TokenSet
from bff.session.memory_store import MemoryStore
from bff.session.redis_store import RedisStore
from tests.support.metric_deltas import MetricDeltas
from tests.support.oidc_provider import TestProvider, running
from tests.support.token_env import TokenEnv, token_env

ROUTE = RouteSettings(path="/api", upstream="https://api.example.net")
REFRESHES = "bff_token_refresh_total"


@pytest.fixture
def provider() -> Iterator[TestProvider]:
    with running(TestProvider(access_token_ttl=300)) as provider:
        yield provider


@pytest.fixture(params=["redis", "memory"])
async def env(
    request: pytest.FixtureRequest, provider: TestProvider, redis_store: RedisStore
) -> AsyncIterator[TokenEnv]:
    store = redis_store if request.param == "redis" else MemoryStore()
    async with token_env(provider, store) as env:
        yield env


async def test_a_fresh_token_is_used_as_is(env: TokenEnv) -> None:
    manager = await env.manager()
    _, loaded = await env.login()
    assert await manager.access_token(loaded, ROUTE) == loaded.session.tokens.access_token
    assert env.provider.refresh_calls == 0


async def test_concurrent_requests_in_one_process_refresh_once(env: TokenEnv) -> None:
    manager = await env.manager()
    session_id, stale = await env.expired_login()
    deltas = MetricDeltas()
    tokens = await asyncio.wait_for(asyncio.gather(*(manager.access_token(stale, ROUTE) for _ in range(50))), 20)
    assert deltas.by(REFRESHES, "outcome") == {"ok": 1, "joined": 49}  # each request once, by what it got
    assert len(set(tokens)) == 1
    assert tokens[0] != stale.session.tokens.access_token
    assert env.provider.refresh_calls == 1
    assert env.provider.reuse_detected == 0
    reloaded = await env.sessions.load(session_id)
    assert reloaded is not None
    assert reloaded.session.tokens.access_token == tokens[0]
    assert reloaded.session.tokens.refresh_token != stale.session.tokens.refresh_token  # rotated and stored


async def test_concurrent_requests_across_processes_refresh_once(env: TokenEnv) -> None:
    managers = [await env.manager() for _ in range(3)]
    _, stale = await env.expired_login()
    calls = [m.access_token(stale, ROUTE) for m in managers for _ in range(20)]
    deltas = MetricDeltas()
    tokens = await asyncio.wait_for(asyncio.gather(*calls), 20)
    # The other processes' flights found the refreshed session (polling, or reloading under the lock): joined.
    assert deltas.by(REFRESHES, "outcome") == {"ok": 1, "joined": 59}
    assert len(set(tokens)) == 1
    assert env.provider.refresh_calls == 1
    assert env.provider.reuse_detected == 0


async def test_a_slow_idp_does_not_let_a_second_refresher_in(env: TokenEnv) -> None:
    settings = TokenSettings(refresh_lock_lease=0.3)  # the IdP takes 4 leases to answer
    managers = [await env.manager(settings) for _ in range(3)]
    _, stale = await env.expired_login()
    env.provider.token_delay = 1.2
    tokens = await asyncio.wait_for(
        asyncio.gather(*(m.access_token(stale, ROUTE) for m in managers for _ in range(10))), 20
    )
    assert len(set(tokens)) == 1
    assert env.provider.refresh_calls == 1
    assert env.provider.reuse_detected == 0


async def test_a_straggler_with_the_old_tokens_does_not_replay(env: TokenEnv) -> None:
    manager, other = await env.manager(), await env.manager()
    _, stale = await env.expired_login()
    deltas = MetricDeltas()
    first = await manager.access_token(stale, ROUTE)
    # `stale` is what a request read before the refresh landed: it must get the new token, not spend the old one.
    assert await other.access_token(stale, ROUTE) == first
    assert deltas.by(REFRESHES, "outcome") == {"ok": 1, "joined": 1}
    assert env.provider.refresh_calls == 1
    assert env.provider.reuse_detected == 0


async def test_a_result_left_by_an_earlier_refresh_is_used_and_counted_joined(env: TokenEnv) -> None:
    """An earlier refresh spent the token and saved its result, but its session write never landed: the next one
    takes that result instead of presenting the spent token again, and did not refresh itself."""
    manager = await env.manager()
    _, stale = await env.expired_login()
    spent = stale.session.tokens.refresh_token
    assert spent is not None
    left = TokenSet(
        access_token="left-by-the-earlier-refresh", refresh_token="rotated-then", expires_at=time.time() + 300
    )
    await env.sessions.save_refresh_result(spent, left, 60)
    deltas = MetricDeltas()
    assert await manager.access_token(stale) == "left-by-the-earlier-refresh"
    assert env.provider.refresh_calls == 0
    assert deltas.by(REFRESHES, "outcome") == {"joined": 1}


async def test_refresh_without_rotation_keeps_the_refresh_token(env: TokenEnv) -> None:
    env.provider.rotate_refresh_tokens = False
    manager = await env.manager()
    session_id, loaded = await env.login()
    stale = await env.expire_access_token(session_id)
    await manager.access_token(stale, ROUTE)
    reloaded = await env.sessions.load(session_id)
    assert reloaded is not None
    assert reloaded.session.tokens.refresh_token == loaded.session.tokens.refresh_token


async def test_invalid_grant_ends_the_session(env: TokenEnv) -> None:
    manager = await env.manager()
    session_id, stale = await env.expired_login()
    await env.idps[0].client.revoke(stale.session.tokens.refresh_token or "")  # e.g. revoked by an admin
    with pytest.raises(SessionExpired):
        await manager.access_token(stale, ROUTE)
    assert await env.sessions.load(session_id) is None


async def test_reuse_detected_by_the_idp_ends_the_session(env: TokenEnv) -> None:
    manager = await env.manager()
    session_id, stale = await env.expired_login()
    spent = stale.session.tokens.refresh_token or ""
    await env.idps[0].client.refresh(spent)  # someone else spent it (a stolen copy)
    with pytest.raises(SessionExpired):
        await manager.access_token(stale, ROUTE)
    assert env.provider.reuse_detected == 1
    assert await env.sessions.load(session_id) is None


async def test_an_idp_outage_keeps_the_session_and_backs_off(env: TokenEnv) -> None:
    manager = await env.manager()
    session_id, stale = await env.expired_login()
    env.provider.fail_token_endpoint_with = 503
    with pytest.raises(IdPUnavailable) as info:
        await manager.access_token(stale, ROUTE)
    assert info.value.retry_after is not None
    assert info.value.retry_after >= 1
    calls = len(env.provider.token_requests)
    with pytest.raises(IdPUnavailable):
        await manager.access_token(stale, ROUTE)  # the IdP is down: not sent the refresh token again
    assert len(env.provider.token_requests) == calls  # failing fast while the IdP is probed
    assert await env.sessions.load(session_id) is not None


async def test_an_outage_during_a_proactive_refresh_uses_the_still_valid_token(env: TokenEnv) -> None:
    manager = await env.manager(TokenSettings(refresh_leeway=600))  # every token is "about to expire"
    _, loaded = await env.login()
    env.provider.fail_token_endpoint_with = 500
    assert await manager.access_token(loaded, ROUTE) == loaded.session.tokens.access_token


async def test_a_logout_racing_a_refresh_does_not_resurrect_the_session(env: TokenEnv) -> None:
    manager = await env.manager()
    session_id, stale = await env.expired_login()
    env.provider.token_delay = 0.5
    refresh = asyncio.ensure_future(manager.access_token(stale, ROUTE))
    await asyncio.sleep(0.2)
    await env.sessions.delete(stale, reason="logout")  # logout while the IdP is still answering
    with pytest.raises(SessionExpired):
        await refresh
    assert await env.sessions.load(session_id) is None
    issued = env.provider.token_responses[-1]["refresh_token"]
    assert issued in env.provider.revoked_tokens  # the orphaned refresh token was revoked


async def test_a_refreshed_id_token_for_another_user_ends_the_session(env: TokenEnv) -> None:
    manager = await env.manager()
    session_id, stale = await env.expired_login()
    env.provider.id_token_claims_override = {"sub": "mallory-0666"}
    with pytest.raises(SessionExpired, match="another user"):
        await manager.access_token(stale, ROUTE)
    assert await env.sessions.load(session_id) is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # OpenID Connect Core 3.1.3.8: the refreshed ID token's at_hash must bind the refreshed access token.
        ({"at_hash": "R6WcBw6Zt9Ae3mEkLJa4SA"}, "the refreshed ID token is invalid"),
        # Core 3.1.3.7 step 3 applies to refreshed ID tokens too (Core 12.2).
        ({"aud": ["spa-bff", "another-client"], "azp": "spa-bff"}, "the refreshed ID token is invalid"),
    ],
)
async def test_a_refreshed_id_token_that_fails_validation_ends_the_session(
    env: TokenEnv, override: dict[str, object], message: str
) -> None:
    manager = await env.manager()
    session_id, stale = await env.expired_login()
    env.provider.id_token_claims_override = override
    with pytest.raises(SessionExpired, match=message):
        await manager.access_token(stale, ROUTE)
    assert await env.sessions.load(session_id) is None


async def test_per_route_tokens_are_cached_and_rotate_the_refresh_token(env: TokenEnv) -> None:
    manager = await env.manager()
    session_id, loaded = await env.login()
    route = RouteSettings(
        path="/api/orders",
        upstream="https://orders.example.net",
        resource="https://orders.example.net",
        scopes=("openid",),
    )
    token = await manager.access_token(loaded, route)
    assert token != loaded.session.tokens.access_token
    request = env.provider.token_requests[-1]
    assert request["resource"] == "https://orders.example.net"
    reloaded = await env.sessions.load(session_id)
    assert reloaded is not None
    assert reloaded.session.tokens.refresh_token != loaded.session.tokens.refresh_token
    assert await manager.access_token(reloaded, route) == token  # cached in the session
    assert env.provider.refresh_calls == 1
    # The login's own token still works and still refreshes with the rotated refresh token.
    stale = await env.expire_access_token(session_id)
    await manager.access_token(stale, ROUTE)
    assert env.provider.reuse_detected == 0


async def test_client_tokens_are_single_flight_and_cached(env: TokenEnv) -> None:
    manager = await env.manager()
    route = RouteSettings(path="/api/x", upstream="https://x.example.net", token="client")
    tokens = await asyncio.gather(*(manager.client_token(route) for _ in range(20)))
    assert len(set(tokens)) == 1
    grants = [r["grant_type"] for r in env.provider.token_requests]
    assert grants.count("client_credentials") == 1


async def test_client_routes_need_a_session_unless_they_say_anonymous(env: TokenEnv) -> None:
    manager = await env.manager()
    route = RouteSettings(path="/api/x", upstream="https://x.example.net", token="client")
    nobody: dict[str, object] = {"type": "http", "headers": []}
    forged: dict[str, object] = {"type": "http", "headers": [(b"cookie", b"__Host-bff=forged.value")]}
    for scope in (nobody, forged):
        with pytest.raises(Unauthenticated):
            await manager.bearer(scope, route)
    # bff's own token was not even fetched for a caller without a session.
    assert "client_credentials" not in [r["grant_type"] for r in env.provider.token_requests]

    session_id, _ = await env.login()
    cookie = f"__Host-bff={env.sessions.cookie_value(session_id)}".encode()
    signed_in: dict[str, object] = {"type": "http", "headers": [(b"cookie", cookie)]}
    token = await manager.bearer(signed_in, route)
    assert token is not None
    assert token == await manager.client_token(route)

    # A route that says so serves anonymous callers with bff's token.
    public = RouteSettings(path="/api/x", upstream="https://x.example.net", token="client", anonymous=True)
    assert await manager.bearer(nobody, public) == token


# --- refresh under faults ------------------------------------------------------------------------------------------


class CancelSwallowingStore(MemoryStore):
    """A store whose ``extend_lock`` (the lock renewer's call) blocks until it is cancelled and swallows the first
    cancellation, returning as if its write had completed: what CPython 3.11's ``asyncio.wait_for`` inside
    redis-py does when a cancel lands as the command's reply arrives. Later calls block until cancelled again."""

    def __init__(self) -> None:
        super().__init__()
        self.swallowed = 0

    async def extend_lock(self, key: str, token: str, ttl: float) -> bool:
        renewed = await super().extend_lock(key, token, ttl)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            if self.swallowed:
                raise
            self.swallowed += 1
        return renewed


async def test_a_lost_cancellation_of_the_lock_renewer_does_not_hang_the_refresh(provider: TestProvider) -> None:
    store = CancelSwallowingStore()
    async with token_env(provider, store) as env:
        manager = await env.manager(TokenSettings(refresh_lock_lease=0.3))
        _, stale = await env.expired_login()
        env.provider.token_delay = 0.4  # the renewer is inside extend_lock when the refresh ends
        token = await asyncio.wait_for(manager.access_token(stale, ROUTE), 5)
        assert token != stale.session.tokens.access_token
        assert store.swallowed == 1
        # The lock was released, not left to a renewer that never stops.
        assert await store.get(env.sessions.refresh_lock_key(stale.key)) is None


async def _wait_for_refresh(env: TokenEnv, session_id: str, stale: str, limit: float = 10) -> None:
    """Until the session holds a token other than ``stale`` (a background refresh landed)."""
    async with asyncio.timeout(limit):
        while True:
            loaded = await env.sessions.load(session_id)
            assert loaded is not None, "the session was lost"
            if loaded.session.tokens.access_token != stale:
                return
            await asyncio.sleep(0.05)


async def test_a_refresh_slower_than_the_timeout_answers_503_in_time_and_its_result_is_kept(env: TokenEnv) -> None:
    here, there = await env.manager(oidc_timeout=0.5), await env.manager(oidc_timeout=0.5)  # two processes
    session_id, stale = await env.expired_login()
    spent = stale.session.tokens.refresh_token
    env.provider.token_delay = 1.5  # slower than the user-facing timeout, well within the refresh's own deadline
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(IdPUnavailable) as info:
        await asyncio.wait_for(here.access_token(stale, ROUTE), 5)
    assert loop.time() - started < 0.5 + 0.5  # the request's deadline, plus a small bound
    assert info.value.retry_after is not None
    # Another process, meanwhile: it sees the lock and waits (up to its own deadline) instead of spending the token.
    started = loop.time()
    with pytest.raises(IdPUnavailable):
        await asyncio.wait_for(there.access_token(stale, ROUTE), 5)
    assert loop.time() - started < 0.5 + 0.5
    await _wait_for_refresh(env, session_id, stale.session.tokens.access_token)
    # Both processes' next requests (still holding the old tokens) get the rotated ones.
    token = await asyncio.wait_for(here.access_token(stale, ROUTE), 5)
    assert await asyncio.wait_for(there.access_token(stale, ROUTE), 5) == token
    assert token != stale.session.tokens.access_token
    presented = [r["refresh_token"] for r in env.provider.token_requests if r.get("grant_type") == "refresh_token"]
    assert presented == [spent]  # presented exactly once
    assert env.provider.reuse_detected == 0
    reloaded = await env.sessions.load(session_id)
    assert reloaded is not None
    assert reloaded.session.tokens.access_token == token


async def test_requests_joining_a_slow_refresh_each_answer_within_their_deadline(env: TokenEnv) -> None:
    manager = await env.manager(oidc_timeout=0.4)
    _, stale = await env.expired_login()
    env.provider.token_delay = 1.2
    loop = asyncio.get_running_loop()

    async def one(delay: float) -> tuple[float, str | None]:
        await asyncio.sleep(delay)
        started = loop.time()
        try:
            token: str | None = await manager.access_token(stale, ROUTE)
        except IdPUnavailable:
            token = None
        return loop.time() - started, token

    results = await asyncio.wait_for(asyncio.gather(*(one(i * 0.1) for i in range(14))), 10)
    assert all(took < 0.4 + 0.5 for took, _ in results), results
    assert None in {token for _, token in results}  # the first ones gave up waiting ...
    assert {token for _, token in results} - {None}  # ... the later ones got the refresh's result
    assert env.provider.refresh_calls == 1
    assert env.provider.reuse_detected == 0


async def test_refreshing_resumes_as_soon_as_the_idp_is_back(env: TokenEnv) -> None:
    manager = await env.manager()
    session_id, stale = await env.expired_login()
    env.provider.fail_token_endpoint_with = 503
    loop = asyncio.get_running_loop()
    outage_ends = loop.time() + 3.2
    while loop.time() < outage_ends:  # a browser retrying throughout a 3 s outage
        with pytest.raises(IdPUnavailable) as info:
            await asyncio.wait_for(manager.access_token(stale, ROUTE), 5)
        assert info.value.retry_after is not None
        assert info.value.retry_after <= 1  # the IdP is probed in the background: retry soon
        await asyncio.sleep(0.1)
    assert await env.sessions.load(session_id) is not None
    grants = [r.get("grant_type") for r in env.provider.token_requests]
    # A failing IdP is probed, not sent the refresh token again and again.
    assert grants.count("refresh_token") == 1
    env.provider.fail_token_endpoint_with = None
    back = loop.time()
    async with asyncio.timeout(5):
        while True:
            try:
                token = await manager.access_token(stale, ROUTE)
                break
            except IdPUnavailable:
                await asyncio.sleep(0.05)
    assert loop.time() - back < 2.0  # the next probe's answer, not a back-off of several seconds
    assert token != stale.session.tokens.access_token
    assert env.provider.reuse_detected == 0


async def test_the_probe_stops_on_close(provider: TestProvider) -> None:
    async with token_env(provider, MemoryStore()) as env:
        manager = await env.manager()
        _, stale = await env.expired_login()
        env.provider.fail_token_endpoint_with = 502
        with pytest.raises(IdPUnavailable):
            await manager.access_token(stale, ROUTE)
        await asyncio.sleep(1.4)
        probes = len(env.provider.token_requests)
        assert probes >= 2  # the refresh, then the probe's requests
        await asyncio.wait_for(manager.aclose(), 5)
        await asyncio.sleep(1.2)
        assert len(env.provider.token_requests) == probes  # nothing probes any more


async def test_a_refresh_stuck_past_every_deadline_frees_its_lock_and_is_replaced(
    env: TokenEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An IdP call that loses the cancellation of its own deadline (and so never ends): requests still answer in
    time, the lock's renewer gives up at the deadline so the lease runs out, and a later request starts afresh."""
    settings = TokenSettings(refresh_lock_lease=0.3, refresh_timeout=0.6)
    manager = await env.manager(settings, oidc_timeout=0.3)
    _, stale = await env.expired_login()
    client = env.idps[0].client
    real_refresh = client.refresh
    stuck = True

    async def refresh(refresh_token: str, **options: Any) -> TokenSet:
        if stuck:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                await asyncio.sleep(3600)  # the deadline's cancellation, lost; the next one (shutdown) is not
        return await real_refresh(refresh_token, **options)

    monkeypatch.setattr(client, "refresh", refresh)
    lock_key = env.sessions.refresh_lock_key(stale.key)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(IdPUnavailable):
        await asyncio.wait_for(manager.access_token(stale, ROUTE), 5)
    assert loop.time() - started < 0.3 + 0.3
    assert await env.sessions.store.ttl(lock_key) is not None  # held while the refresh may still answer
    async with asyncio.timeout(5):
        while True:  # ... but not renewed past its deadline: the lease runs out
            if await env.sessions.store.ttl(lock_key) is None:
                break
            await asyncio.sleep(0.05)
    assert loop.time() - started < 0.6 + 2 * 0.3 + 0.5
    stuck = False
    async with asyncio.timeout(5):
        while True:  # once the stuck flight is past every deadline, the next request refreshes anew
            try:
                token = await manager.access_token(stale, ROUTE)
                break
            except IdPUnavailable:
                await asyncio.sleep(0.1)
    assert token != stale.session.tokens.access_token


async def test_shutdown_lets_a_refresh_in_flight_store_what_the_idp_answered(env: TokenEnv) -> None:
    manager = await env.manager(oidc_timeout=0.3)
    session_id, stale = await env.expired_login()
    env.provider.token_delay = 1.0
    with pytest.raises(IdPUnavailable):
        await manager.access_token(stale, ROUTE)
    await asyncio.wait_for(manager.aclose(), 10)  # SIGTERM while the IdP is still answering
    reloaded = await env.sessions.load(session_id)
    assert reloaded is not None
    assert reloaded.session.tokens.access_token != stale.session.tokens.access_token  # the rotation was kept
    assert await env.sessions.store.ttl(env.sessions.refresh_lock_key(stale.key)) is None


class UnconfirmedWritesStore(MemoryStore):
    """A store whose plain writes and compare-and-sets fail ``failures`` times once armed, as a Redis store with
    ``store_replicas`` fails the writes no replica confirmed while a failover cuts the primary off its replica."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0
        #: Only writes to keys starting so fail (all when empty).
        self.fail_prefixes: tuple[str, ...] = ()
        #: A failing ``set`` stores the value first.
        self.lands = False

    def _fail(self, key: str) -> None:
        if self.failures and (not self.fail_prefixes or key.startswith(self.fail_prefixes)):
            self.failures -= 1
            raise SessionStoreUnavailable("session store memory: SET not confirmed by 1 replica(s)")

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if self.lands:  # as Redis does: the primary took the write, only its confirmation failed
            await super().set(key, value, ttl)
        self._fail(key)
        await super().set(key, value, ttl)

    async def set_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        taken = await super().set_if_absent(key, value, ttl) if self.lands else False
        self._fail(key)
        return taken or await super().set_if_absent(key, value, ttl)

    async def compare_and_set(self, key: str, expected: bytes, value: bytes, ttl: float) -> bool:
        self._fail(key)
        return await super().compare_and_set(key, expected, value, ttl)


async def test_rotated_tokens_the_store_did_not_confirm_are_written_again_not_lost(provider: TestProvider) -> None:
    """The IdP rotated the refresh token, then the store failed the writes of the new one (a failover): the refresh
    keeps writing them, under its lock, until the store confirms. Giving up would leave the spent refresh token in
    the session, and the next refresh would present it again: reuse, and the IdP revokes the family."""
    store = UnconfirmedWritesStore()
    async with token_env(provider, store) as env:
        here, there = await env.manager(), await env.manager()
        session_id, stale = await env.expired_login()
        store.fail_prefixes = ("s:", "r:")  # the session record and the refresh result
        store.failures = 3
        token = await asyncio.wait_for(here.access_token(stale, ROUTE), 5)
        assert token != stale.session.tokens.access_token
        assert store.failures == 0
        assert await asyncio.wait_for(there.access_token(stale, ROUTE), 5) == token
        reloaded = await env.sessions.load(session_id)
        assert reloaded is not None
        assert reloaded.session.tokens.access_token == token
        assert env.provider.refresh_calls == 1
        assert env.provider.reuse_detected == 0


async def test_a_refresh_whose_lock_a_failover_lost_is_not_repeated_while_its_result_is_unknown(
    provider: TestProvider,
) -> None:
    """One process got rotated tokens from the IdP but the store fails their writes; then a failover drops its lock
    (the promoted replica never had the latest renewal). Another process takes the lock and finds the spent
    refresh token in the session, and no result for it: it must not present that token again (the IdP would
    revoke the family) while the first one may still store the result. It answers 503 until the result is there."""
    store = UnconfirmedWritesStore()
    async with token_env(provider, store) as env:
        here, there = await env.manager(oidc_timeout=0.3), await env.manager(oidc_timeout=0.3)
        session_id, stale = await env.expired_login()
        lock_key = env.sessions.refresh_lock_key(stale.key)
        # The session record and the refresh result fail (key_for: "s:...", the result: "r:..."); the rest works.
        assert stale.key.startswith("s:")
        store.fail_prefixes = ("s:", "r:")
        store.failures = 10**6  # until the test lifts it: the first refresh keeps trying to write
        with pytest.raises(IdPUnavailable):
            await asyncio.wait_for(here.access_token(stale, ROUTE), 5)
        assert env.provider.refresh_calls == 1
        await store.delete(lock_key)  # lost in the failover
        with pytest.raises(IdPUnavailable):
            await asyncio.wait_for(there.access_token(stale, ROUTE), 5)
        assert env.provider.refresh_calls == 1
        store.failures = 0  # the store is back: the first refresh's retry lands
        await _wait_for_refresh(env, session_id, stale.session.tokens.access_token)
        token = await asyncio.wait_for(there.access_token(stale, ROUTE), 5)
        assert token != stale.session.tokens.access_token
        assert env.provider.refresh_calls == 1
        assert env.provider.reuse_detected == 0


async def test_a_spending_mark_the_store_did_not_confirm_does_not_block_the_next_refresh(
    provider: TestProvider,
) -> None:
    """Marking the refresh token as being spent fails (no replica confirmed it) although the primary took the
    write: the IdP is not asked, and the mark is removed, so the session's next request refreshes normally
    instead of waiting for a refresh that never happened."""
    store = UnconfirmedWritesStore()
    async with token_env(provider, store) as env:
        manager = await env.manager()
        _, stale = await env.expired_login()
        store.fail_prefixes, store.lands, store.failures = ("p:",), True, 1
        with pytest.raises(SessionStoreUnavailable):
            await asyncio.wait_for(manager.access_token(stale, ROUTE), 5)
        assert env.provider.refresh_calls == 0
        token = await asyncio.wait_for(manager.access_token(stale, ROUTE), 5)
        assert token != stale.session.tokens.access_token
        assert env.provider.refresh_calls == 1


# --- token exchange (RFC 8693) -----------------------------------------------------------------------------------

ORDERS = RouteSettings(path="/orders", upstream="https://orders.example.net", exchange=ExchangeSettings("orders-api"))
EXCHANGES = "bff_token_exchange_total"


async def test_concurrent_exchanges_in_one_process_make_one_and_count_it(env: TokenEnv) -> None:
    manager = await env.manager()
    session_id, loaded = await env.login()
    deltas = MetricDeltas()
    tokens = await asyncio.wait_for(asyncio.gather(*(manager.access_token(loaded, ORDERS) for _ in range(20))), 20)
    assert len(set(tokens)) == 1
    assert tokens[0] != loaded.session.tokens.access_token
    assert env.provider.exchange_calls == 1
    assert deltas.by(EXCHANGES, "outcome") == {"ok": 1, "joined": 19}
    assert deltas.by(REFRESHES, "outcome") == {}
    reloaded = await env.sessions.load(session_id)
    assert reloaded is not None
    assert reloaded.session.tokens == loaded.session.tokens  # the login's tokens are untouched
    assert await manager.access_token(reloaded, ORDERS) == tokens[0]  # cached
    assert env.provider.exchange_calls == 1


async def test_an_exchange_on_an_expired_login_token_without_a_refresh_token_ends_the_session(
    env: TokenEnv,
) -> None:
    manager = await env.manager()
    session_id, stale = await env.expired_login()
    no_refresh = stale.session.evolve(
        tokens=TokenSet(access_token=stale.session.tokens.access_token, expires_at=stale.session.tokens.expires_at)
    )
    written = await env.sessions.replace(stale, no_refresh)
    assert written is not None
    with pytest.raises(SessionExpired):
        await manager.access_token(written, ORDERS)
    assert env.provider.exchange_calls == 0
    assert await env.sessions.load(session_id) is None


async def test_a_refused_exchange_keeps_the_session_and_is_counted(env: TokenEnv) -> None:
    manager = await env.manager()
    session_id, loaded = await env.login()
    ledger = RouteSettings(path="/ledger", upstream="https://l.example.net", exchange=ExchangeSettings("ledger-api"))
    deltas = MetricDeltas()
    with pytest.raises(TokenExchangeRefused) as info:
        await manager.access_token(loaded, ledger)
    assert (info.value.status, info.value.error, info.value.oauth_error) == (
        502,
        "token_exchange_refused",
        "invalid_target",
    )
    assert deltas.by(EXCHANGES, "outcome") == {"refused": 1}
    assert await env.sessions.load(session_id) is not None
    assert await manager.access_token(loaded, ROUTE) == loaded.session.tokens.access_token
