"""``MeteredStore`` (chosen in ``app.py`` for every store): one duration per call of every ``SessionStore`` method and
one error per failed call, on the memory store and on a real ``redis-server`` (also when it is gone). The per-request
``get_and_touch`` is metered by ``SessionManager.load_key`` instead, exactly once per call too."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from bff.config import Secret, SessionSettings
from bff.errors import SessionStoreUnavailable
from bff.session.manager import SessionManager
from bff.session.memory_store import MemoryStore
from bff.session.metered_store import MeteredStore
from bff.session.redis_store import RedisStore
from bff.session.store import SessionStore
from bff.telemetry import metrics
from tests.support.metric_deltas import MetricDeltas
from tests.support.redis_server import RedisProcess

CALLS = "bff_store_operation_duration_seconds_count"
ERRORS = "bff_store_errors_total"
KEY = "k" * 16 + "-a-session-key-for-the-metered-store"
#: Every SessionStore method but aclose, called once each by ``exercise``.
EVERY_OPERATION = dict.fromkeys(metrics.STORE_OPERATIONS, 1.0)


def manager_on(store: SessionStore) -> SessionManager:
    return SessionManager(store, SessionSettings(keys=(Secret(KEY),)))


async def exercise(store: SessionStore) -> None:
    """Each method once, in an order in which each succeeds on a working store."""
    await store.set("k", b"v", 60)
    assert await store.get("k") == b"v"
    assert await store.set_if_absent("n", b"v", 60)
    assert await store.compare_and_set("k", b"v", b"w", 60)
    assert await store.touch("k", 60)
    assert await store.ttl("k") is not None
    assert await store.take("n") == b"v"
    assert await store.delete("k")
    await store.index_add("i", "m", 60)
    assert await store.index_members("i") == ["m"]
    await store.index_remove("i", "m")
    owner = await store.lock("l", 60)
    assert owner is not None
    assert await store.extend_lock("l", owner, 60)
    assert await store.unlock("l", owner)
    await store.ping()
    # The per-request read, as the proxy makes it.
    assert await manager_on(store).load("no-such-session") is None


@pytest.fixture(params=["memory", "redis"])
def inner(request: pytest.FixtureRequest, memory_store: MemoryStore, redis_store: RedisStore) -> SessionStore:
    return memory_store if request.param == "memory" else redis_store


async def test_every_operation_is_timed_once_per_call(inner: SessionStore) -> None:
    store = MeteredStore(inner)
    deltas = MetricDeltas()
    await exercise(store)
    assert deltas.by(CALLS, "operation") == EVERY_OPERATION
    assert deltas.by(ERRORS, "operation") == {}


async def test_the_per_request_read_is_the_inner_stores_own_method(inner: SessionStore) -> None:
    """No second coroutine on every proxied request: the wrapper hands get_and_touch through."""
    assert MeteredStore(inner).get_and_touch == inner.get_and_touch


async def failing(call: Callable[[], Awaitable[object]]) -> None:
    with pytest.raises(SessionStoreUnavailable):
        await call()


async def every_call_fails(store: SessionStore) -> None:
    sessions = manager_on(store)
    for call in (
        lambda: store.get("k"),
        lambda: store.set("k", b"v", 60),
        lambda: store.set_if_absent("k", b"v", 60),
        lambda: store.compare_and_set("k", b"v", b"w", 60),
        lambda: store.touch("k", 60),
        lambda: store.ttl("k"),
        lambda: store.take("k"),
        lambda: store.delete("k"),
        lambda: store.index_add("i", "m", 60),
        lambda: store.index_remove("i", "m"),
        lambda: store.index_members("i"),
        lambda: store.lock("l", 60),
        lambda: store.extend_lock("l", "owner", 60),
        lambda: store.unlock("l", "owner"),
        lambda: store.ping(),
        lambda: sessions.load("a-session"),
    ):
        await failing(call)


async def test_a_stopped_redis_counts_one_error_per_call(redis_process: RedisProcess) -> None:
    store = MeteredStore(RedisStore.from_url(redis_process.url, prefix="metered:", timeout=0.5))
    try:
        await exercise(store)  # connected once: the pooled connections die with the server
        redis_process.stop()
        deltas = MetricDeltas()
        await every_call_fails(store)
    finally:
        await store.aclose()
    # Once per call, although the Redis store retries a dead connection once inside the call.
    assert deltas.by(ERRORS, "operation") == EVERY_OPERATION
    assert deltas.by(CALLS, "operation") == EVERY_OPERATION


async def test_a_closed_memory_store_counts_one_error_per_call() -> None:
    store = MeteredStore(MemoryStore())
    await store.aclose()
    deltas = MetricDeltas()
    await every_call_fails(store)
    assert deltas.by(ERRORS, "operation") == EVERY_OPERATION
    assert deltas.by(CALLS, "operation") == EVERY_OPERATION
