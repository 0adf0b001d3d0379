"""Reaching into a running bff's sessions from a test, through a SessionManager of the test's own."""

from __future__ import annotations

from bff.models import TokenSet
from bff.session.manager import LoadedSession, SessionManager


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
