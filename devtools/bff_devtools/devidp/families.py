"""Refresh-token families: rotation on every use, reuse detection, revocation (RFC 9700 4.14.2).

A family is everything rotated out of one authorization code grant. Its record holds the hash of the one refresh
token that may be used now. Presenting it rotates the family (a new token, the old one spent) with a
compare-and-set on the record, so of two concurrent presentations exactly one wins. Presenting a spent token means
two parties hold the family's tokens (a leak, or a client that is not single-flight): the whole family is revoked,
its live access tokens go to the blocklist, and the client gets a back-channel logout for the session.

With a reuse grace window (``DevIdPSettings.refresh_reuse_grace``, off by default), one spent token is not reuse:
the one the last rotation replaced, presented within the window after that rotation. It rotates the family again
(a new token; the current one becomes the replaced one), so a client whose refresh answer was lost (a timeout) can
retry with the token it still holds. Auth0 ("reuse interval") and Okta ("grace period") offer the same trade: a
thief presenting a just-rotated token within the window is not detected.

Revocation is a state, not a deletion: the record stays (``revoked``, with the reason) until its TTL runs out, so a
late replay is still recognised and the admin page can show what happened.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from bff.session.store import SessionStore
from bff.types import Clock
from bff_devtools.acr import ACR_PWD
from bff_devtools.devidp.backchannel import BackchannelNotifier, LogoutTarget
from bff_devtools.devidp.records import (
    Family,
    RevokedReason,
    family_key,
    is_random_id,
    jti_member,
    parse_jti_member,
    refresh_key,
    secret_hash,
    session_key,
    user_key,
)
from bff_devtools.devidp.settings import DemoUser
from bff_devtools.devidp.storage import Blocklist

logger = logging.getLogger("bff_devtools.devidp.families")

#: A compare-and-set loses only to another write of the same family (a rotation); a few retries always suffice.
_CAS_ATTEMPTS = 8


@dataclass(frozen=True)
class LoadedFamily:
    family: Family
    #: The exact bytes read, for the compare-and-set that rotates or revokes.
    raw: bytes


def new_refresh_token() -> str:
    """An opaque refresh token: 256 bits from ``secrets``; the store keeps only its hash."""
    return secrets.token_urlsafe(32)


class TokenFamilies:
    def __init__(
        self,
        store: SessionStore,
        *,
        refresh_token_ttl: float,
        reuse_grace: float = 0,
        blocklist: Blocklist,
        notifier: BackchannelNotifier,
        clock: Clock,
    ) -> None:
        self._store = store
        self._ttl = refresh_token_ttl
        self._grace = reuse_grace
        self._blocklist = blocklist
        self._notifier = notifier
        self._clock = clock

    async def create(
        self,
        *,
        client_id: str,
        user: DemoUser,
        sid: str,
        scope: str,
        auth_time: int,
        user_version: int,
        acr: str = ACR_PWD,
    ) -> tuple[Family, str]:
        """A new family and its first refresh token."""
        token = new_refresh_token()
        now = self._clock()
        family = Family(
            family_id=secrets.token_urlsafe(12),
            client_id=client_id,
            username=user.username,
            sub=user.sub,
            sid=sid,
            scope=scope,
            auth_time=auth_time,
            user_version=user_version,
            created_at=now,
            last_used_at=now,
            current_hash=secret_hash(token),
            acr=acr,
        )
        await self._store.set(refresh_key(family.current_hash), family.family_id.encode(), self._ttl)
        await self._store.set(family_key(family.family_id), family.to_bytes(), self._ttl)
        await self._index(family)
        return family, token

    async def load(self, family_id: str) -> LoadedFamily | None:
        if not is_random_id(family_id):  # e.g. from the admin page's URL
            return None
        raw = await self._store.get(family_key(family_id))
        return None if raw is None else LoadedFamily(Family.from_bytes(raw), raw)

    async def find(self, refresh_token: str) -> LoadedFamily | None:
        """The family a refresh token (current or spent) belongs to, whatever its state."""
        family_id = await self._store.get(refresh_key(secret_hash(refresh_token)))
        return None if family_id is None else await self.load(family_id.decode())

    async def redeem(self, refresh_token: str) -> LoadedFamily | None:
        """The active family whose *current* token this is, or None. A spent token revokes its family (reuse)."""
        loaded = await self.find(refresh_token)
        if loaded is None or loaded.family.state != "active":
            return None
        presented = secret_hash(refresh_token)
        if secrets.compare_digest(loaded.family.current_hash, presented):
            return loaded
        if self._within_grace(loaded.family, presented):
            logger.info("replaced refresh token presented within the grace window: family %s rotates again",
                        loaded.family.family_id)  # fmt: skip
            return loaded
        logger.warning("refresh token reuse detected: revoking family %s", loaded.family.family_id)
        await self.revoke(loaded.family.family_id, "reuse_detected")
        return None

    def _within_grace(self, family: Family, presented: str) -> bool:
        """The token the last rotation replaced, within the grace window after that rotation."""
        if self._grace <= 0 or family.previous_hash is None or family.rotated_at is None:
            return False
        replaced = secrets.compare_digest(family.previous_hash, presented)
        return replaced and self._clock() - family.rotated_at <= self._grace

    async def rotate(self, loaded: LoadedFamily) -> str | None:
        """Spend the family's current token and return its successor; None when another request rotated or
        revoked the family since ``loaded`` was read (then this presentation was a reuse, and is treated so)."""
        token = new_refresh_token()
        rotated = loaded.family.rotated(secret_hash(token), self._clock())
        # The token's key first: should the compare-and-set fail, it names a family that never made it current.
        await self._store.set(refresh_key(rotated.current_hash), rotated.family_id.encode(), self._ttl)
        if not await self._store.compare_and_set(
            family_key(rotated.family_id), loaded.raw, rotated.to_bytes(), self._ttl
        ):
            logger.warning("refresh token used twice concurrently: revoking family %s", rotated.family_id)
            await self.revoke(rotated.family_id, "reuse_detected")
            return None
        await self._index(rotated)
        return token

    async def record_access_token(self, family_id: str, jti: str, exp: int) -> None:
        """Remember an access token issued from the family, so revoking the family can blocklist it."""
        await self._store.index_add(family_key(family_id, "jtis"), jti_member(jti, exp), exp - self._clock())

    async def revoke(self, family_id: str, reason: RevokedReason, *, notify: bool = True) -> Family | None:
        """Revoke one family; see :meth:`revoke_many`."""
        return next(iter(await self.revoke_many([family_id], reason, notify=notify)), None)

    async def revoke_many(
        self, family_ids: Iterable[str], reason: RevokedReason, *, notify: bool = True
    ) -> list[Family]:
        """Revoke the families that are still active, blocklist their live access tokens and, with ``notify``,
        send one back-channel logout per (client, session). Returns the families this call revoked."""
        revoked = [family for family_id in family_ids if (family := await self._revoke(family_id, reason))]
        if notify and revoked:
            await self._notifier.notify(LogoutTarget(f.client_id, f.sub, f.sid) for f in revoked)
        return revoked

    async def of_user(self, username: str) -> list[Family]:
        return await self._members(user_key(username, "families"))

    async def of_session(self, sid: str) -> list[Family]:
        return await self._members(session_key(sid, "families"))

    # --- internals ------------------------------------------------------------------------------------------------

    async def _revoke(self, family_id: str, reason: RevokedReason) -> Family | None:
        key = family_key(family_id)
        for _ in range(_CAS_ATTEMPTS):
            loaded = await self.load(family_id)
            remaining = await self._store.ttl(key)
            if loaded is None or remaining is None or loaded.family.state != "active":
                return None  # gone, or revoked already (by someone who also notified)
            revoked = loaded.family.revoked(reason, self._clock())
            if await self._store.compare_and_set(key, loaded.raw, revoked.to_bytes(), remaining):
                await self._blocklist_access_tokens(family_id)
                logger.info("family %s of %s revoked (%s)", family_id, revoked.username, reason)
                return revoked
        raise RuntimeError(f"family {family_id} kept changing while being revoked")

    async def _blocklist_access_tokens(self, family_id: str) -> None:
        key = family_key(family_id, "jtis")
        now = self._clock()
        for member in await self._store.index_members(key):
            parsed = parse_jti_member(member)
            if parsed is not None and parsed[1] > now:
                await self._blocklist.add(*parsed)
        await self._store.delete(key)

    async def _index(self, family: Family) -> None:
        await self._store.index_add(user_key(family.username, "families"), family.family_id, self._ttl)
        await self._store.index_add(session_key(family.sid, "families"), family.family_id, self._ttl)

    async def _members(self, index: str) -> list[Family]:
        """The families in ``index``, oldest first; members whose record expired are dropped from the index."""
        families = []
        for family_id in await self._store.index_members(index):
            loaded = await self.load(family_id)
            if loaded is None:
                await self._store.index_remove(index, family_id)
            else:
                families.append(loaded.family)
        return sorted(families, key=lambda f: f.created_at)
