"""Reaching into a running bff's sessions from a test, through a SessionManager of the test's own."""

from __future__ import annotations

from bff.app import BffApp
from bff.models import TokenSet
from bff.session.manager import LoadedSession, SessionManager
from bff.session.redis_store import RedisStore


async def expire_access_token(sessions: SessionManager, session_id: str) -> LoadedSession:
    """Make the session's access token look expired, as if its lifetime had passed; the rest stays as it was."""
    loaded = await sessions.load(session_id)
    assert loaded is not None, "no such session"
    old = loaded.session.tokens
    expired = TokenSet(
        access_token=old.access_token,
        token_type=old.token_type,
        expires_at=1.0,
        refresh_token=old.refresh_token,
        id_token=old.id_token,
        scope=old.scope,
    )
    written = await sessions.replace(loaded, loaded.session.evolve(tokens=expired))
    assert written is not None, "the session changed underneath the test"
    return written


async def expire_in_store(app: BffApp, redis_url: str, cookie: str) -> LoadedSession:
    """Expire the access token of the session behind ``cookie`` in the Redis store of the running ``app``, through
    a SessionManager of the test's own on the same keys; returns the session as it was written."""
    store = RedisStore.from_url(redis_url)
    try:
        prefix = app.sessions.key_for("x").rpartition("s:")[0]
        ours = SessionManager(store, app.config.session, prefix=prefix)
        session_id = ours.session_id_from_cookie(cookie)
        assert session_id is not None
        return await expire_access_token(ours, session_id)
    finally:
        await store.aclose()
