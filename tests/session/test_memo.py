"""The decoded-session memo: never answers for a record the store no longer holds byte for byte, and stays within
its memory budget (``bff.session.memo``)."""

from __future__ import annotations

import dataclasses

import pytest

from bff.config import parse_config
from bff.frontends import FrontendsApp
from bff.session.manager import DECODED_MEMO_BYTES, SessionManager
from bff.session.memo import ENTRY_OVERHEAD, DecodedMemo
from bff.session.redis_store import RedisStore
from tests.session.test_manager import TOKENS, settings
from tests.support.clock import FakeClock
from tests.test_config_frontends import entry, multi_document


@pytest.fixture
def instances(redis_store: RedisStore, fake_clock: FakeClock) -> tuple[SessionManager, SessionManager]:
    """Two bff instances (A and B) sharing one real Redis, each with its own memo."""
    return (
        SessionManager(redis_store, settings(idle=600, absolute=1000), clock=fake_clock),
        SessionManager(redis_store, settings(idle=600, absolute=1000), clock=fake_clock),
    )


async def test_a_session_deleted_on_another_instance_is_refused_at_once(
    instances: tuple[SessionManager, SessionManager],
) -> None:
    a, b = instances
    session_id, _ = await a.create(sub="alice", sid="s1", claims={}, tokens=TOKENS)
    loaded = await a.load(session_id)
    assert loaded is not None
    assert await a.load(session_id) is not None  # memoised on A now
    assert len(a._decoded) == 1
    on_b = await b.load(session_id)
    assert on_b is not None
    await b.delete(on_b, reason="logout")
    assert await a.load(session_id) is None


async def test_a_session_replaced_on_another_instance_is_read_anew(
    instances: tuple[SessionManager, SessionManager],
) -> None:
    a, b = instances
    session_id, _ = await a.create(sub="alice", sid=None, claims={}, tokens=TOKENS)
    before = await a.load(session_id)
    assert before is not None
    on_b = await b.load(session_id)
    assert on_b is not None
    refreshed = on_b.session.evolve(tokens=dataclasses.replace(TOKENS, access_token="AT-after-refresh"))
    assert await b.replace(on_b, refreshed) is not None
    after = await a.load(session_id)
    assert after is not None
    assert after.session.tokens.access_token == "AT-after-refresh"
    assert after.session.version == before.session.version + 1
    assert len(a._decoded) == 1  # the old record's entry was replaced, not kept beside the new one


async def test_a_memoised_session_past_its_absolute_expiry_is_refused(
    instances: tuple[SessionManager, SessionManager], fake_clock: FakeClock
) -> None:
    a, _ = instances
    session_id, _ = await a.create(sub="alice", sid=None, claims={}, tokens=TOKENS)
    for _ in range(3):  # each read slides the idle timeout; the absolute one does not move
        fake_clock.advance(300)
        assert await a.load(session_id) is not None
    fake_clock.advance(101)
    assert await a.load(session_id) is None


async def test_other_bytes_under_a_memoised_key_are_decoded_not_served_from_the_memo(
    instances: tuple[SessionManager, SessionManager], redis_store: RedisStore
) -> None:
    a, _ = instances
    session_id, _ = await a.create(sub="alice", sid=None, claims={}, tokens=TOKENS)
    key = a.key_for(session_id)
    assert await a.load(session_id) is not None
    raw = await redis_store.get(key)
    assert raw is not None
    tampered = raw[:-1] + bytes([raw[-1] ^ 1])  # the GCM tag's last byte
    await redis_store.set(key, tampered, 60)
    assert await a.load(session_id) is None


async def test_a_session_ended_here_leaves_the_memo(instances: tuple[SessionManager, SessionManager]) -> None:
    a, _ = instances
    session_id, _ = await a.create(sub="alice", sid=None, claims={}, tokens=TOKENS)
    loaded = await a.load(session_id)
    assert loaded is not None
    await a.delete(loaded, reason="logout")
    assert len(a._decoded) == 0
    assert a._decoded.size == 0


def _decode(key: str, raw: bytes) -> tuple[str, int]:
    decoded.append(key)
    return raw.decode(), len(raw)


decoded: list[str] = []


def test_the_memo_stays_within_its_budget_least_recently_used_out() -> None:
    cost = 10 + 2 * 10 + ENTRY_OVERHEAD  # a 10-byte record whose text is 10 bytes
    memo = DecodedMemo(_decode, budget=3 * cost)
    decoded.clear()
    for key in ("k1", "k2", "k3"):
        memo(key, b"0123456789")
    memo("k1", b"0123456789")  # a hit: k1 is now the most recently used
    assert decoded == ["k1", "k2", "k3"]
    memo("k4", b"0123456789")
    assert memo.size == 3 * cost
    assert len(memo) == 3
    memo("k1", b"0123456789")
    memo("k2", b"0123456789")  # k2 was the least recently used: evicted, decoded again
    assert decoded == ["k1", "k2", "k3", "k4", "k2"]
    assert memo.size <= 3 * cost


def test_an_entry_larger_than_the_budget_is_not_kept() -> None:
    memo = DecodedMemo(_decode, budget=ENTRY_OVERHEAD)
    decoded.clear()
    assert memo("big", b"x" * 100) == "x" * 100
    assert memo("big", b"x" * 100) == "x" * 100
    assert decoded == ["big", "big"]
    assert len(memo) == 0
    assert memo.size == 0


def test_frontends_share_one_worker_budget_for_decoded_sessions() -> None:
    doc = multi_document(*(entry(name, f"https://{name}.example.com") for name in ("a", "b", "c")))
    app = FrontendsApp(parse_config(doc, env={}))
    budgets = [stack.sessions._decoded.budget for stack in app.apps.values()]
    assert len(budgets) == 3
    assert sum(budgets) <= DECODED_MEMO_BYTES
    assert min(budgets) == DECODED_MEMO_BYTES // 3
