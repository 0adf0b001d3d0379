"""The contract every ``SessionStore`` keeps, run against each implementation (oauth2-proxy's RunSessionStoreTests).

Backends: the memory store (also wrapped in ``TracedStore``, as when tracing is on), and Redis standalone, behind
Sentinel and as a Cluster (real servers, see ``tests/support/redis_server.py``). Time passes through
``Harness.elapse``: the memory store's fake clock moves, while Redis really sleeps, so TTLs whose expiry is awaited
stay short (``SHORT``), and lifetimes that must *not* have ended are checked with ``ttl()`` against long TTLs rather
than by sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import uuid4

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bff.config import TracingSettings
from bff.errors import SessionStoreUnavailable
from bff.session.memory_store import MemoryStore
from bff.session.redis_store import RedisStore
from bff.session.store import SessionStore
from bff.session.traced_store import TracedStore
from bff.telemetry.tracing import Tracing
from tests.support.clock import FakeClock

if TYPE_CHECKING:  # mypy --strict proves that both implementations match the protocol, method by method

    def _implementations(
        memory: MemoryStore, redis: RedisStore, traced: TracedStore
    ) -> tuple[SessionStore, SessionStore, SessionStore]:
        return memory, redis, traced


SHORT = 0.05  # a TTL the test waits out
PAST_SHORT = 0.12  # how long it waits
LONG = 60.0  # a TTL that cannot run out during a test


@dataclass
class Harness:
    store: SessionStore
    elapse: Callable[[float], Awaitable[None]]  # let time pass


BACKENDS = [
    "memory",
    "traced-memory",  # the store with a span per operation (tracing on) must keep the contract it wraps
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("redis-sentinel", marks=pytest.mark.redis),
    pytest.param("redis-cluster", marks=pytest.mark.redis),
]


@pytest.fixture(params=BACKENDS)
def harness(request: pytest.FixtureRequest) -> Harness:
    if request.param in ("memory", "traced-memory"):
        clock: FakeClock = request.getfixturevalue("fake_clock")

        async def advance(seconds: float) -> None:
            clock.advance(seconds)

        memory: SessionStore = request.getfixturevalue("memory_store")
        if request.param == "traced-memory":
            memory = TracedStore(memory, in_memory_tracing(), system="memory")
        return Harness(memory, advance)
    fixture = {"redis": "redis_store", "redis-sentinel": "sentinel_store", "redis-cluster": "cluster_store"}
    return Harness(request.getfixturevalue(fixture[request.param]), asyncio.sleep)


def in_memory_tracing() -> Tracing:
    return Tracing(TracingSettings(enabled=True), processor=SimpleSpanProcessor(InMemorySpanExporter()))


@pytest.fixture
async def sentinel_store(redis_sentinel_url: str) -> AsyncIterator[RedisStore]:
    store = RedisStore.from_url(redis_sentinel_url, prefix=f"t{uuid4().hex}:")
    yield store
    await store.aclose()


@pytest.fixture
async def cluster_store(redis_cluster_url: str) -> AsyncIterator[RedisStore]:
    store = RedisStore.from_url(redis_cluster_url, prefix=f"t{uuid4().hex}:")
    yield store
    await store.aclose()


@pytest.fixture
def store(harness: Harness) -> SessionStore:
    return harness.store


BINARY_VALUES = [b"", b"\x00", b"a\x00b", bytes(range(256)), b"\xff" * 70_000]


# -- get / set ---------------------------------------------------------------------------------------------------


async def test_get_absent_is_none(store: SessionStore) -> None:
    assert await store.get("absent") is None


@pytest.mark.parametrize("value", BINARY_VALUES, ids=["empty", "nul", "inner-nul", "all-bytes", "70k"])
async def test_set_then_get_returns_the_same_bytes(store: SessionStore, value: bytes) -> None:
    await store.set("k", value, LONG)
    assert await store.get("k") == value


async def test_set_replaces_value_and_ttl(store: SessionStore) -> None:
    await store.set("k", b"one", LONG)
    await store.set("k", b"two", 5)
    assert await store.get("k") == b"two"
    assert 4 < (await store.ttl("k") or 0) <= 5


async def test_keys_are_independent(store: SessionStore) -> None:
    await store.set("a", b"A", LONG)
    await store.set("b", b"B", LONG)
    assert await store.delete("a")
    assert await store.get("b") == b"B"


async def test_value_expires_after_its_ttl(harness: Harness) -> None:
    await harness.store.set("k", b"v", SHORT)
    await harness.elapse(PAST_SHORT)
    assert await harness.store.get("k") is None
    assert await harness.store.ttl("k") is None


@pytest.mark.parametrize("ttl", [0, -1])
async def test_set_with_ttl_le_zero_deletes(store: SessionStore, ttl: float) -> None:
    await store.set("k", b"old", LONG)
    await store.set("k", b"new", ttl)
    await store.set("fresh", b"v", ttl)
    assert await store.get("k") is None
    assert await store.get("fresh") is None


# -- set_if_absent -----------------------------------------------------------------------------------------------


async def test_set_if_absent_stores_only_once(store: SessionStore) -> None:
    assert await store.set_if_absent("k", b"first", LONG)
    assert not await store.set_if_absent("k", b"second", LONG)
    assert await store.get("k") == b"first"


async def test_set_if_absent_applies_ttl_and_works_again_after_expiry(harness: Harness) -> None:
    assert await harness.store.set_if_absent("k", b"first", SHORT)
    await harness.elapse(PAST_SHORT)
    assert await harness.store.set_if_absent("k", b"second", LONG)
    assert await harness.store.get("k") == b"second"


async def test_set_if_absent_with_ttl_le_zero_stores_nothing(store: SessionStore) -> None:
    assert not await store.set_if_absent("k", b"v", 0)
    assert await store.get("k") is None


async def test_a_tiny_positive_ttl_still_stores(store: SessionStore) -> None:
    # Redis counts whole milliseconds: 0.1 ms must become 1 ms, not 0 (which would delete or be refused).
    assert await store.set_if_absent("k", b"v", 0.0001)
    assert await store.lock("lock", 0.0001)


# -- compare_and_set ---------------------------------------------------------------------------------------------


async def test_compare_and_set_replaces_on_match_and_applies_ttl(store: SessionStore) -> None:
    await store.set("k", b"a\x00old", LONG)
    assert await store.compare_and_set("k", b"a\x00old", b"new", 5)
    assert await store.get("k") == b"new"
    assert 4 < (await store.ttl("k") or 0) <= 5


@pytest.mark.parametrize(
    "expected",
    [b"other", b"a\x00ol", b"a\x00olD", b"a\x00old\x00", b"a\x00oxd", b""],
    ids=["other", "prefix", "case", "suffix-nul", "after-nul", "empty"],
)
async def test_compare_and_set_leaves_a_different_value_alone(store: SessionStore, expected: bytes) -> None:
    await store.set("k", b"a\x00old", LONG)
    assert not await store.compare_and_set("k", expected, b"new", 5)
    assert await store.get("k") == b"a\x00old"
    assert (await store.ttl("k") or 0) > LONG - 10  # the TTL is untouched too


async def test_compare_and_set_on_absent_key_stores_nothing(store: SessionStore) -> None:
    assert not await store.compare_and_set("k", b"", b"new", LONG)
    assert await store.get("k") is None


async def test_compare_and_set_with_ttl_le_zero_deletes_on_match(store: SessionStore) -> None:
    await store.set("k", b"old", LONG)
    assert await store.compare_and_set("k", b"old", b"new", 0)
    assert await store.get("k") is None


# -- touch / ttl -------------------------------------------------------------------------------------------------


async def test_ttl_of_absent_key_is_none(store: SessionStore) -> None:
    assert await store.ttl("absent") is None


async def test_ttl_counts_down_from_the_ttl_set(harness: Harness) -> None:
    await harness.store.set("k", b"v", 10)
    first = await harness.store.ttl("k")
    assert first is not None
    assert 9 < first <= 10
    await harness.elapse(0.05)
    second = await harness.store.ttl("k")
    assert second is not None
    assert second < first


async def test_touch_extends_an_existing_key(store: SessionStore) -> None:
    await store.set("k", b"v", 1)
    assert await store.touch("k", LONG)
    assert (await store.ttl("k") or 0) > LONG - 10
    assert await store.get("k") == b"v"


async def test_touch_sets_rather_than_grows_the_ttl(harness: Harness) -> None:
    await harness.store.set("k", b"v", LONG)
    assert await harness.store.touch("k", SHORT)
    await harness.elapse(PAST_SHORT)
    assert await harness.store.get("k") is None


async def test_touch_on_absent_key_creates_nothing(store: SessionStore) -> None:
    assert not await store.touch("absent", LONG)
    assert await store.ttl("absent") is None


async def test_touch_on_expired_key_is_false(harness: Harness) -> None:
    await harness.store.set("k", b"v", SHORT)
    await harness.elapse(PAST_SHORT)
    assert not await harness.store.touch("k", LONG)
    assert await harness.store.get("k") is None


async def test_touch_with_ttl_le_zero_deletes(store: SessionStore) -> None:
    await store.set("k", b"v", LONG)
    assert await store.touch("k", 0)
    assert await store.get("k") is None


# -- get_and_touch (the sliding read of every proxied request) ---------------------------------------------------


@pytest.mark.parametrize("value", BINARY_VALUES, ids=["empty", "nul", "inner-nul", "all-bytes", "70k"])
async def test_get_and_touch_returns_the_value_and_replaces_the_ttl(store: SessionStore, value: bytes) -> None:
    await store.set("k", value, 1)
    assert await store.get_and_touch("k", LONG) == value
    assert (await store.ttl("k") or 0) > LONG - 10
    assert await store.get("k") == value


async def test_get_and_touch_may_shorten_the_ttl(harness: Harness) -> None:
    await harness.store.set("k", b"v", LONG)
    assert await harness.store.get_and_touch("k", SHORT) == b"v"
    await harness.elapse(PAST_SHORT)
    assert await harness.store.get("k") is None


async def test_get_and_touch_on_absent_key_creates_nothing(store: SessionStore) -> None:
    assert await store.get_and_touch("absent", LONG) is None
    assert await store.ttl("absent") is None


async def test_get_and_touch_on_expired_key_is_none(harness: Harness) -> None:
    await harness.store.set("k", b"v", SHORT)
    await harness.elapse(PAST_SHORT)
    assert await harness.store.get_and_touch("k", LONG) is None
    assert await harness.store.ttl("k") is None


@pytest.mark.parametrize("ttl", [0, -1])
async def test_get_and_touch_with_ttl_le_zero_returns_the_value_and_deletes(store: SessionStore, ttl: float) -> None:
    await store.set("k", b"v", LONG)
    assert await store.get_and_touch("k", ttl) == b"v"
    assert await store.get("k") is None


# -- take / delete -----------------------------------------------------------------------------------------------


async def test_take_returns_the_value_once(store: SessionStore) -> None:
    await store.set("k", b"\x00state", LONG)
    assert await store.take("k") == b"\x00state"
    assert await store.take("k") is None
    assert await store.get("k") is None


async def test_take_absent_is_none(store: SessionStore) -> None:
    assert await store.take("absent") is None


async def test_concurrent_take_gives_the_value_to_exactly_one_task(store: SessionStore) -> None:
    await store.set("k", b"one-time", LONG)
    async with asyncio.timeout(5):
        results = await asyncio.gather(*(store.take("k") for _ in range(20)))
    assert sorted(results, key=lambda r: r is None) == [b"one-time"] + [None] * 19


async def test_delete_reports_whether_something_was_deleted(store: SessionStore) -> None:
    await store.set("k", b"v", LONG)
    assert await store.delete("k")
    assert not await store.delete("k")
    assert await store.get("k") is None


# -- indexes -----------------------------------------------------------------------------------------------------


async def test_index_add_remove_members(store: SessionStore) -> None:
    assert await store.index_members("idx") == []
    await store.index_add("idx", "a", LONG)
    await store.index_add("idx", "b", LONG)
    await store.index_add("idx", "a", LONG)
    await store.index_add("idx", "sid:ü/例", LONG)
    assert sorted(await store.index_members("idx")) == ["a", "b", "sid:ü/例"]
    await store.index_remove("idx", "a")
    await store.index_remove("idx", "never-added")
    await store.index_remove("absent-idx", "a")
    assert sorted(await store.index_members("idx")) == ["b", "sid:ü/例"]


async def test_index_removing_the_last_member_removes_the_index(store: SessionStore) -> None:
    await store.index_add("idx", "a", LONG)
    await store.index_remove("idx", "a")
    assert await store.index_members("idx") == []
    assert await store.ttl("idx") is None


async def test_index_ttl_only_grows(store: SessionStore) -> None:
    await store.index_add("idx", "a", 100)
    assert 99 < (await store.ttl("idx") or 0) <= 100
    await store.index_add("idx", "b", 1)
    assert 99 < (await store.ttl("idx") or 0) <= 100
    await store.index_add("idx", "c", 1000)
    assert 999 < (await store.ttl("idx") or 0) <= 1000


async def test_index_expires_with_its_ttl(harness: Harness) -> None:
    await harness.store.index_add("idx", "a", SHORT)
    await harness.elapse(PAST_SHORT)
    assert await harness.store.index_members("idx") == []
    await harness.store.index_add("idx", "b", LONG)  # a new set, not the old one revived
    assert await harness.store.index_members("idx") == ["b"]


async def test_index_add_with_ttl_le_zero_stores_nothing(store: SessionStore) -> None:
    await store.index_add("idx", "a", 0)
    assert await store.index_members("idx") == []


# -- locks -------------------------------------------------------------------------------------------------------


async def test_lock_is_exclusive_until_unlocked(store: SessionStore) -> None:
    token = await store.lock("lock", LONG)
    assert token
    assert await store.lock("lock", LONG) is None
    assert await store.unlock("lock", token)
    assert not await store.unlock("lock", token)
    second = await store.lock("lock", LONG)
    assert second
    assert second != token


async def test_wrong_token_can_neither_extend_nor_unlock(store: SessionStore) -> None:
    token = await store.lock("lock", 5)
    assert token
    assert not await store.extend_lock("lock", token + "x", LONG)
    assert not await store.unlock("lock", "not-" + token)
    assert await store.lock("lock", LONG) is None  # still held
    assert (await store.ttl("lock") or 0) <= 5  # and its lease untouched


async def test_extend_lock_renews_the_lease(store: SessionStore) -> None:
    token = await store.lock("lock", 1)
    assert token
    assert await store.extend_lock("lock", token, LONG)
    assert (await store.ttl("lock") or 0) > LONG - 10


async def test_lock_is_reacquirable_after_its_lease_expires(harness: Harness) -> None:
    store = harness.store
    old = await store.lock("lock", SHORT)
    assert old
    await harness.elapse(PAST_SHORT)
    new = await store.lock("lock", LONG)
    assert new
    assert new != old
    assert not await store.extend_lock("lock", old, LONG)  # the old owner lost it...
    assert not await store.unlock("lock", old)  # ...and cannot release the new owner's lock
    assert await store.lock("lock", LONG) is None


async def test_extend_lock_on_absent_lock_is_false(store: SessionStore) -> None:
    assert not await store.extend_lock("lock", "token", LONG)
    assert await store.ttl("lock") is None


async def test_extend_lock_with_ttl_le_zero_releases(store: SessionStore) -> None:
    token = await store.lock("lock", LONG)
    assert token
    assert await store.extend_lock("lock", token, 0)
    assert await store.lock("lock", LONG)


async def test_lock_with_ttl_le_zero_is_not_taken(store: SessionStore) -> None:
    assert await store.lock("lock", 0) is None
    assert await store.ttl("lock") is None


async def test_concurrent_lock_has_exactly_one_winner(store: SessionStore) -> None:
    async with asyncio.timeout(5):
        tokens = await asyncio.gather(*(store.lock("lock", LONG) for _ in range(20)))
    assert len([t for t in tokens if t is not None]) == 1


# -- lifecycle ---------------------------------------------------------------------------------------------------


async def test_ping_answers(store: SessionStore) -> None:
    await store.ping()


async def test_closed_store_refuses_every_call(store: SessionStore) -> None:
    await store.aclose()
    calls: list[Callable[[], Awaitable[object]]] = [
        store.ping,
        lambda: store.get("k"),
        lambda: store.set("k", b"v", LONG),
        lambda: store.take("k"),
        lambda: store.lock("k", LONG),
        lambda: store.index_members("k"),
    ]
    for call in calls:
        with pytest.raises(SessionStoreUnavailable):
            await call()
    await store.aclose()  # closing twice is harmless
