"""Frontends sharing one key ring and one Redis stay apart cryptographically, not only by key names: a cookie,
a sealed login or a record of one frontend never opens at another, and its indexes never list another's sessions,
even when the IdPs' ``sub`` and ``sid`` collide (bff.config.frontends, docs/frontends.md)."""

from __future__ import annotations

from bff.config.frontends import store_namespace
from bff.models import LoginState, TokenSet
from bff.session.manager import SessionManager
from bff.session.redis_store import RedisStore
from tests.support.configs import make_config


def managers(store: RedisStore) -> tuple[SessionManager, SessionManager]:
    settings = make_config().session  # one key ring for both
    a = SessionManager(store, settings, prefix=store_namespace("a"), frontend="a")
    b = SessionManager(store, settings, prefix=store_namespace("b"), frontend="b")
    return a, b


async def test_a_cookie_signed_for_one_frontend_does_not_verify_at_another(redis_store: RedisStore) -> None:
    a, b = managers(redis_store)
    session_id, _ = await a.create(sub="alice", sid="s1", claims={}, tokens=TokenSet(access_token="at"))
    cookie = a.cookie_value(session_id)
    assert a.session_id_from_cookie(cookie) == session_id
    assert b.session_id_from_cookie(cookie) is None
    # Not even the single-frontend signer (no name) takes it, nor does frontend a take the single one's cookies.
    single = SessionManager(redis_store, make_config().session)
    assert single.session_id_from_cookie(cookie) is None
    assert a.session_id_from_cookie(single.cookie_value(session_id)) is None


async def test_a_record_copied_under_another_frontends_key_does_not_decrypt(redis_store: RedisStore) -> None:
    a, b = managers(redis_store)
    session_id, _ = await a.create(sub="alice", sid=None, claims={}, tokens=TokenSet(access_token="at"))
    raw = await redis_store.get(a.key_for(session_id))
    assert raw is not None
    await redis_store.set(b.key_for(session_id), raw, 60)  # someone with store access moves it across
    assert await b.load(session_id) is None


async def test_a_login_sealed_for_one_frontend_does_not_open_at_another(redis_store: RedisStore) -> None:
    a, b = managers(redis_store)
    login = LoginState(state="st", nonce="n", code_verifier="v", return_to="/", created_at=0.0)
    sealed = a.logins.seal(login, "__Host-a-login")
    assert a.logins.open(sealed, "__Host-a-login") == login
    assert b.logins.open(sealed, "__Host-a-login") is None


async def test_indexes_of_colliding_sub_and_sid_list_only_the_frontends_own_sessions(redis_store: RedisStore) -> None:
    a, b = managers(redis_store)
    id_a, _ = await a.create(sub="alice", sid="same-sid", claims={}, tokens=TokenSet(access_token="at-a"))
    id_b, _ = await b.create(sub="alice", sid="same-sid", claims={}, tokens=TokenSet(access_token="at-b"))
    assert await b.keys_for_sub("alice") == [b.key_for(id_b)]
    assert await b.keys_for_sid("same-sid") == [b.key_for(id_b)]
    for key in await b.keys_for_sid("same-sid"):  # what a back-channel logout at b ends
        await b.end_key(key, reason="backchannel")
    assert await b.load(id_b) is None
    loaded = await a.load(id_a)
    assert loaded is not None
    assert loaded.session.tokens.access_token == "at-a"
