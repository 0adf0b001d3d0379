"""Admin operations on one user's sessions, behind ``bff sessions list`` and ``bff sessions revoke``.

They act on the shared session store, so they reach the sessions of every bff instance that uses it: "log out
everywhere" is one command on any host with the config. Sessions are found through the per-user index
(``SessionManager.keys_for_sub``), never by scanning the keyspace.

What they show is safe to print: a session appears as a short handle (the start of its store key, itself a hash of
the session id), its clocks and its IdP ``sid``; never the session id, a cookie or a token.

``revoke_sessions`` deletes first and revokes after, as ``/bff/logout`` does: the sessions end even if the IdP is
slow or down. Each refresh token is then revoked at the IdP (RFC 7009); a failure is reported, never fatal, since
the session is gone either way. A refresh in flight on another instance cannot bring a session back: its
compare-and-set write fails on the deleted key. A session created after the command read the index (the user
logging in again meanwhile) is not touched: disable the user at the IdP first to keep them out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bff.errors import BffError, OAuthError, ServiceUnavailable
from bff.oidc.provider import IdentityProvider
from bff.session.manager import SessionManager
from bff.types import JSONObject


@dataclass(frozen=True)
class SessionInfo:
    """One live session, as an operator may see it. Times are epoch seconds."""

    handle: str
    created_at: float
    #: Approximate, a lower bound: sessions are not rewritten on every request (the store only slides their TTL),
    #: so this is derived from the remaining TTL and the idle timeout (see ``list_sessions``).
    last_seen: float
    #: Absolute expiry: the session ends then, whatever its activity.
    expires_at: float
    #: When the record expires unless it is used again (its store TTL).
    idle_expires_at: float
    sid: str | None

    def to_json(self) -> JSONObject:
        return {
            "handle": self.handle,
            "created_at": int(self.created_at),
            "last_seen": int(self.last_seen),
            "expires_at": int(self.expires_at),
            "idle_expires_at": int(self.idle_expires_at),
            "sid": self.sid,
        }


@dataclass(frozen=True)
class SessionListing:
    sub: str
    sessions: list[SessionInfo]
    #: Records that exist but do not decrypt with this key ring (a config with other ``session.keys``?) or are in a
    #: store format of a newer release (docs/storage-formats.md).
    unreadable: int = 0

    def to_json(self) -> JSONObject:
        return {
            "sub": self.sub,
            "sessions": [s.to_json() for s in self.sessions],
            "unreadable": self.unreadable,
            "last_seen_is_approximate": True,
        }


@dataclass
class RevokeReport:
    sub: str
    #: Sessions deleted (readable ones; ``unreadable`` counts the others, deleted too).
    deleted: int = 0
    unreadable: int = 0
    #: Refresh tokens the IdP accepted to revoke.
    revoked: int = 0
    #: One line per problem, safe to print (no token, no session id).
    failures: list[str] = field(default_factory=list)


async def list_sessions(sessions: SessionManager, sub: str) -> SessionListing:
    """The live sessions of ``sub``, oldest first. Reading them does not extend their idle timeout.

    Last seen: every request slides the record's TTL to ``min(now + idle_timeout, absolute expiry, refresh-token
    expiry) - now`` without rewriting the record, so ``now + ttl - idle_timeout`` is the last use when the idle
    timeout set the TTL, and earlier than the last use when an expiry capped it. The larger of that and the
    record's own ``last_seen`` (written at login and at each refresh) is a lower bound, shown as approximate.
    """
    found: list[SessionInfo] = []
    unreadable = 0
    now = sessions.clock()
    for key in await sessions.keys_for_sub(sub):
        loaded = await sessions.load_key(key, slide=False)
        ttl = await sessions.store.ttl(key)
        if loaded is None or ttl is None:
            if ttl is not None:
                unreadable += 1
            continue
        session = loaded.session
        last_seen = session.last_seen
        if math.isfinite(ttl):
            last_seen = max(last_seen, now + ttl - sessions.settings.idle_timeout)
        found.append(
            SessionInfo(
                handle=sessions.handle_for(key),
                created_at=session.created_at,
                last_seen=min(last_seen, now),
                expires_at=session.expires_at,
                idle_expires_at=now + ttl if math.isfinite(ttl) else session.expires_at,
                sid=session.sid,
            )
        )
    found.sort(key=lambda s: (s.created_at, s.handle))
    return SessionListing(sub=sub, sessions=found, unreadable=unreadable)


async def revoke_sessions(sessions: SessionManager, idp: IdentityProvider, sub: str) -> RevokeReport:
    """Delete every session of ``sub`` and revoke their refresh tokens at the IdP ("log out everywhere").

    Raises ``SessionStoreUnavailable`` when the store cannot be reached (then nothing is revoked); IdP failures are
    collected in the report instead.
    """
    report = RevokeReport(sub=sub)
    to_revoke: list[tuple[str, str]] = []
    for key in await sessions.keys_for_sub(sub):
        loaded = await sessions.load_key(key, slide=False)
        if loaded is not None:
            await sessions.delete(loaded, reason="revoked")
            report.deleted += 1
            if loaded.session.tokens.refresh_token:
                to_revoke.append((sessions.handle_for(key), loaded.session.tokens.refresh_token))
        elif await sessions.end_key(key, reason="revoked"):
            report.unreadable += 1  # undecryptable: gone now, but its refresh token is unknown, so not revoked
    if to_revoke:
        await _revoke(idp, to_revoke, report)
    return report


async def _revoke(idp: IdentityProvider, tokens: list[tuple[str, str]], report: RevokeReport) -> None:
    if not idp.ready:
        try:
            await idp.load()
        except BffError as exc:
            report.failures.append(
                f"identity provider not reachable ({exc.error}): {len(tokens)} refresh token(s) not revoked"
            )
            return
    if idp.metadata.revocation_endpoint is None:
        report.failures.append(
            f"the identity provider has no revocation_endpoint: {len(tokens)} refresh token(s) not revoked"
        )
        return
    for handle, token in tokens:
        try:
            await idp.client.revoke(token, "refresh_token")
        except (OAuthError, ServiceUnavailable) as exc:
            report.failures.append(f"session {handle}: refresh token revocation failed ({exc.error})")
        else:
            report.revoked += 1
