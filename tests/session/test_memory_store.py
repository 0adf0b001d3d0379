"""What only the memory store has: reclaiming expired keys without scans, a bounded expiry heap, one keyspace.

These look at ``_entries`` and ``_deadlines``: memory use is the behaviour under test, and it has no public face.
"""

from __future__ import annotations

import pytest

from bff.session.memory_store import MemoryStore
from tests.support.clock import FakeClock


async def test_expired_keys_nobody_reads_again_are_reclaimed(memory_store: MemoryStore, fake_clock: FakeClock) -> None:
    for i in range(1000):
        await memory_store.set(f"k{i}", b"v", 1 + i / 1000)
    await memory_store.index_add("idx", "m", 1)
    await memory_store.set("survivor", b"v", 60)
    fake_clock.advance(2)
    await memory_store.ping()  # any call sweeps
    assert set(memory_store._entries) == {"survivor"}
    assert memory_store._deadlines == [(fake_clock() - 2 + 60, "survivor")]


async def test_the_sweep_takes_only_what_has_expired(memory_store: MemoryStore, fake_clock: FakeClock) -> None:
    for i in range(10):
        await memory_store.set(f"k{i}", b"v", i + 1)  # deadlines now+1 ... now+10
    fake_clock.advance(3.5)
    await memory_store.ping()
    assert sorted(memory_store._entries) == [f"k{i}" for i in range(3, 10)]
    assert len(memory_store._deadlines) == 7


async def test_sliding_expiry_keeps_the_heap_proportional_to_live_keys(memory_store: MemoryStore) -> None:
    for i in range(10):
        await memory_store.set(f"k{i}", b"v", 60)
    for _ in range(1000):
        for i in range(10):
            assert await memory_store.touch(f"k{i}", 60)
    assert len(memory_store._deadlines) <= 2 * 10 + 64 + 1
    assert len(memory_store._entries) == 10


async def test_a_stale_deadline_does_not_expire_a_key_that_was_extended(
    memory_store: MemoryStore, fake_clock: FakeClock
) -> None:
    await memory_store.set("touched", b"v", 1)
    assert await memory_store.touch("touched", 60)
    await memory_store.set("replaced", b"old", 1)
    await memory_store.set("replaced", b"new", 60)
    await memory_store.index_add("idx", "a", 1)
    await memory_store.index_add("idx", "b", 60)
    token = await memory_store.lock("lock", 1)
    assert token
    assert await memory_store.extend_lock("lock", token, 60)
    fake_clock.advance(2)  # the first deadline of each key has passed; the current one has not
    assert await memory_store.get("touched") == b"v"
    assert await memory_store.get("replaced") == b"new"
    assert sorted(await memory_store.index_members("idx")) == ["a", "b"]
    assert await memory_store.lock("lock", 60) is None


async def test_a_key_expires_exactly_at_its_deadline(memory_store: MemoryStore, fake_clock: FakeClock) -> None:
    start = fake_clock()
    await memory_store.set("k", b"v", 10)
    fake_clock.advance(9.999)
    assert await memory_store.get("k") == b"v"
    assert await memory_store.ttl("k") == pytest.approx(0.001, abs=1e-6)
    fake_clock.now = start + 10
    assert await memory_store.get("k") is None
    assert await memory_store.ttl("k") is None


async def test_values_and_indexes_share_one_keyspace(memory_store: MemoryStore) -> None:
    # As in Redis (WRONGTYPE): a key is a value or an index, and using it as the other is a programming error.
    await memory_store.set("value", b"v", 60)
    await memory_store.index_add("index", "m", 60)
    with pytest.raises(TypeError, match="holds an index"):
        await memory_store.get("index")
    with pytest.raises(TypeError, match="holds an index"):
        await memory_store.take("index")
    with pytest.raises(TypeError, match="holds a value"):
        await memory_store.index_add("value", "m", 60)
    assert await memory_store.index_members("index") == ["m"]  # a failed take deletes nothing
    assert await memory_store.get("value") == b"v"


async def test_default_clock_is_the_system_clock() -> None:
    store = MemoryStore()
    try:
        await store.set("k", b"v", 60)
        assert 59 < (await store.ttl("k") or 0) <= 60
    finally:
        await store.aclose()
