from __future__ import annotations

import dataclasses
import json
from uuid import uuid4

import pytest

from bff.config import Secret, SessionSettings
from bff.crypto import Encryptor, derive_keys
from bff.models import LoginState, TokenSet
from bff.session.manager import SESSION_ENCRYPTION, SessionManager
from bff.session.memory_store import MemoryStore
from bff.session.redis_store import RedisStore
from tests.support.clock import FakeClock

KEY_A = "a" * 16 + "-session-key-number-one-0123456789"
KEY_B = "b" * 16 + "-session-key-number-two-0123456789"
TOKENS = TokenSet(
    access_token="AT-secret-value",
    refresh_token="RT-secret-value",
    id_token="ID-secret-value",
    expires_at=1_700_000_300.0,
)


def settings(*keys: str, idle: float = 1800, absolute: float = 43200) -> SessionSettings:
    return SessionSettings(
        keys=tuple(Secret(k) for k in keys or (KEY_A,)), idle_timeout=idle, absolute_timeout=absolute
    )


@pytest.fixture(params=["memory", "redis"])
def manager(
    request: pytest.FixtureRequest, fake_clock: FakeClock, memory_store: MemoryStore, redis_store: RedisStore
) -> SessionManager:
    store: MemoryStore | RedisStore = memory_store if request.param == "memory" else redis_store
    return SessionManager(store, settings(), clock=fake_clock)


async def test_create_and_load(manager: SessionManager) -> None:
    session_id, session = await manager.create(sub="alice", sid="idp-sid", claims={"name": "Alice"}, tokens=TOKENS)
    assert len(session_id) >= 43
    loaded = await manager.load(session_id)
    assert loaded is not None
    assert loaded.session == session
    assert loaded.session.tokens.refresh_token == "RT-secret-value"
    assert await manager.load("unknown-" + session_id) is None


async def test_the_store_sees_neither_the_id_nor_a_token(manager: SessionManager) -> None:
    session_id, _ = await manager.create(sub="alice", sid=None, claims={}, tokens=TOKENS)
    key = manager.key_for(session_id)
    assert session_id not in key
    raw = await manager.store.get(key)
    assert raw is not None
    for secret in (b"AT-secret-value", b"RT-secret-value", b"ID-secret-value", b"alice"):
        assert secret not in raw


async def test_a_record_moved_to_another_key_does_not_decrypt(manager: SessionManager) -> None:
    first, _ = await manager.create(sub="alice", sid=None, claims={}, tokens=TOKENS)
    second, _ = await manager.create(sub="mallory", sid=None, claims={}, tokens=TOKENS)
    raw = await manager.store.get(manager.key_for(first))
    assert raw is not None
    await manager.store.set(manager.key_for(second), raw, 60)
    assert await manager.load(second) is None


async def test_cookie_values(manager: SessionManager) -> None:
    value = manager.cookie_value("the-id")
    assert manager.session_id_from_cookie(value) == "the-id"
    assert manager.session_id_from_cookie(value + "x") is None
    assert manager.session_id_from_cookie("the-id") is None


async def test_logout_sid(manager: SessionManager) -> None:
    sid = manager.logouts.sid_for("the-id")
    assert "the-id" not in sid
    assert manager.logouts.check_sid("the-id", sid)
    assert not manager.logouts.check_sid("other-id", sid)
    assert not manager.logouts.check_sid("the-id", "")
    assert not manager.logouts.check_sid("the-id", "\u00e9" * 3)


async def test_logout_redirects_are_one_time_encrypted_and_bound_to_their_key(manager: SessionManager) -> None:
    url = "https://idp.example.com/logout?id_token_hint=ID-secret-value"
    handle = await manager.logouts.save_redirect(url, 60)
    other = await manager.logouts.save_redirect(url, 60)
    assert handle != other
    assert len(handle) >= 43
    key = manager.logouts._redirect_key(handle)
    assert handle not in key
    raw = await manager.store.get(key)
    assert raw is not None
    assert b"ID-secret-value" not in raw
    # A record copied under another handle's key does not decrypt (the key is the associated data).
    await manager.store.set(manager.logouts._redirect_key(other), raw, 60)
    assert await manager.logouts.take_redirect(other) is None
    assert await manager.logouts.take_redirect(handle) == url
    assert await manager.logouts.take_redirect(handle) is None
    assert await manager.logouts.take_redirect("unknown") is None


async def test_key_rotation_keeps_sessions_readable(memory_store: MemoryStore, fake_clock: FakeClock) -> None:
    old = SessionManager(memory_store, settings(KEY_A), clock=fake_clock)
    session_id, _ = await old.create(sub="alice", sid=None, claims={}, tokens=TOKENS)
    cookie = old.cookie_value(session_id)
    rotated = SessionManager(memory_store, settings(KEY_A, KEY_B), clock=fake_clock)
    assert rotated.session_id_from_cookie(cookie) == session_id
    assert await rotated.load(session_id) is not None
    retired = SessionManager(memory_store, settings(KEY_B), clock=fake_clock)
    assert retired.session_id_from_cookie(cookie) is None
    assert await retired.load(session_id) is None


async def test_idle_timeout_slides(memory_store: MemoryStore, fake_clock: FakeClock) -> None:
    manager = SessionManager(memory_store, settings(idle=600), clock=fake_clock)
    session_id, _ = await manager.create(sub="alice", sid=None, claims={}, tokens=TOKENS)
    for _ in range(5):
        fake_clock.advance(500)
        assert await manager.load(session_id) is not None  # each read slides the idle timeout
    fake_clock.advance(500)
    assert await manager.load(session_id, slide=False) is not None
    fake_clock.advance(101)
    assert await manager.load(session_id) is None  # idle for 601 s


async def test_absolute_timeout_wins_over_activity(memory_store: MemoryStore, fake_clock: FakeClock) -> None:
    manager = SessionManager(memory_store, settings(idle=600, absolute=1000), clock=fake_clock)
    session_id, _ = await manager.create(sub="alice", sid=None, claims={}, tokens=TOKENS)
    fake_clock.advance(500)
    assert await manager.load(session_id) is not None
    fake_clock.advance(499)
    assert await manager.load(session_id) is not None
    fake_clock.advance(2)
    assert await manager.load(session_id) is None


class CallCountingStore(MemoryStore):
    """Counts the reads and TTL changes a session lookup makes."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.calls: list[str] = []

    async def get(self, key: str) -> bytes | None:
        self.calls.append("get")
        return await super().get(key)

    async def get_and_touch(self, key: str, ttl: float) -> bytes | None:
        self.calls.append("get_and_touch")
        return await super().get_and_touch(key, ttl)

    async def touch(self, key: str, ttl: float) -> bool:
        self.calls.append("touch")
        return await super().touch(key, ttl)


async def test_a_sliding_read_is_one_store_call_until_the_absolute_timeout_is_near(fake_clock: FakeClock) -> None:
    store = CallCountingStore(fake_clock)
    manager = SessionManager(store, settings(idle=600, absolute=1000), clock=fake_clock)
    session_id, _ = await manager.create(sub="alice", sid=None, claims={}, tokens=TOKENS)
    key = manager.key_for(session_id)
    assert await manager.load(session_id) is not None
    assert store.calls == ["get_and_touch"]  # one round trip per proxied request
    assert await store.ttl(key) == 600
    fake_clock.advance(500)  # 500 s of absolute lifetime left, less than the idle timeout
    store.calls.clear()
    assert await manager.load(session_id) is not None
    assert store.calls == ["get_and_touch", "touch"]
    assert await store.ttl(key) == 500
    store.calls.clear()
    assert await manager.load(session_id, slide=False) is not None
    assert store.calls == ["get"]


async def test_a_record_in_the_format_before_compaction_still_loads(manager: SessionManager) -> None:
    session_id, session = await manager.create(sub="alice", sid="idp-sid", claims={"name": "Alice"}, tokens=TOKENS)
    key = manager.key_for(session_id)
    legacy = Encryptor(derive_keys([KEY_A], SESSION_ENCRYPTION))
    plaintext = json.dumps(session.to_json(), separators=(",", ":")).encode()
    await manager.store.set(key, legacy.encrypt(plaintext, key.encode()), 60)
    loaded = await manager.load(session_id)
    assert loaded is not None
    assert loaded.session == session


async def test_session_never_outlives_its_refresh_token(memory_store: MemoryStore, fake_clock: FakeClock) -> None:
    manager = SessionManager(memory_store, settings(idle=600), clock=fake_clock)
    tokens = dataclasses.replace(TOKENS, refresh_expires_at=fake_clock() + 100)
    session_id, _ = await manager.create(sub="alice", sid=None, claims={}, tokens=tokens)
    assert (await memory_store.ttl(manager.key_for(session_id)) or 0) <= 100
    fake_clock.advance(101)
    assert await manager.load(session_id) is None


async def test_compare_and_set(manager: SessionManager) -> None:
    session_id, _ = await manager.create(sub="alice", sid=None, claims={}, tokens=TOKENS)
    first = await manager.load(session_id)
    second = await manager.load(session_id)
    assert first is not None
    assert second is not None
    newer = dataclasses.replace(TOKENS, access_token="AT-2")
    written = await manager.replace(first, first.session.evolve(tokens=newer))
    assert written is not None
    assert written.session.version == first.session.version + 1
    # The slower writer started from stale bytes: refused, and the newer tokens stay.
    assert await manager.replace(second, second.session.evolve(tokens=TOKENS)) is None
    reloaded = await manager.load(session_id)
    assert reloaded is not None
    assert reloaded.session.tokens.access_token == "AT-2"


async def test_indexes_by_sub_and_sid(manager: SessionManager) -> None:
    sub = f"user-{uuid4().hex}"
    a, _ = await manager.create(sub=sub, sid="sid-1", claims={}, tokens=TOKENS)
    b, _ = await manager.create(sub=sub, sid="sid-2", claims={}, tokens=TOKENS)
    await manager.create(sub="someone-else", sid="sid-1b", claims={}, tokens=TOKENS)
    assert sorted(await manager.keys_for_sub(sub)) == sorted([manager.key_for(a), manager.key_for(b)])
    assert await manager.keys_for_sid("sid-2") == [manager.key_for(b)]
    deleted = await manager.delete_key(manager.key_for(b), reason="revoked")
    assert deleted is not None
    assert await manager.keys_for_sub(sub) == [manager.key_for(a)]
    assert await manager.keys_for_sid("sid-2") == []
    # An index member whose session expired on its own is pruned on read.
    await manager.store.delete(manager.key_for(a))
    assert await manager.keys_for_sub(sub) == []


async def test_a_sealed_login_opens_only_under_its_own_name(manager: SessionManager) -> None:
    login = LoginState(state="st-" + uuid4().hex, nonce="n", code_verifier="v" * 43, return_to="/x", created_at=1.0)
    sealed = manager.logins.seal(login, "__Host-bff-login-a")
    assert manager.logins.open(sealed, "__Host-bff-login-a") == login
    assert "v" * 43 not in sealed  # encrypted, not just signed: the verifier stays secret
    assert manager.logins.open(sealed, "__Host-bff-login-b") is None  # moved under another name
    flipped = sealed[:20] + ("A" if sealed[20] != "A" else "B") + sealed[21:]
    for bad in (flipped, sealed[:-4], "", "!!!", "AAAA" * 40):
        assert manager.logins.open(bad, "__Host-bff-login-a") is None


async def test_a_login_is_consumed_once(manager: SessionManager) -> None:
    now = manager.clock()
    login = LoginState(state="st-" + uuid4().hex, nonce="n", code_verifier="v" * 43, return_to="/x", created_at=now)
    assert await manager.logins.consume(login)
    assert not await manager.logins.consume(login)
    other = LoginState(state="st-" + uuid4().hex, nonce="n", code_verifier="v" * 43, return_to="/x", created_at=now)
    assert await manager.logins.consume(other)
    # The marker lives only as long as the login could be presented.
    ttl = await manager.store.ttl(manager.logins._key(login.state))
    assert ttl is not None
    assert 0 < ttl <= manager.settings.login_timeout
