"""The IdP's users: who they are (the settings), their passwords and their token version (the store).

A changed password is stored as a hash in the store and wins over the one in the settings. Each change bumps the
user's *token version*: refresh-token families and IdP browser sessions remember the version they were created
under, and one created under an older version is dead, even if an index missed it. (Access tokens carry no
version: they are blocklisted by ``jti`` instead, see ``families``.)

scrypt is deliberately slow (~50 ms), so hashing runs in a worker thread, off the event loop.
"""

from __future__ import annotations

import anyio.to_thread

from bff.session.store import SessionStore
from bff_devtools.devidp.passwords import hash_password, verify_password
from bff_devtools.devidp.records import PERSISTENT_TTL, user_key
from bff_devtools.devidp.settings import DemoUser, DevIdPSettings

MIN_PASSWORD_LENGTH = 8


class Accounts:
    def __init__(self, store: SessionStore, settings: DevIdPSettings) -> None:
        self._store = store
        self._settings = settings

    def user(self, username: str) -> DemoUser | None:
        return self._settings.user(username)

    async def authenticate(self, username: str, password: str) -> DemoUser | None:
        """The user if ``password`` is theirs, else None (an unknown name takes as long as a wrong password)."""
        user = self._settings.user(username)
        encoded = None
        if user is not None:
            changed = await self._store.get(user_key(user.username, "password"))
            encoded = changed.decode() if changed is not None else user.password_hash
        matches = await anyio.to_thread.run_sync(verify_password, password, encoded)
        return user if matches else None

    async def password_changed(self, username: str) -> bool:
        return await self._store.get(user_key(username, "password")) is not None

    async def version(self, username: str) -> int:
        raw = await self._store.get(user_key(username, "version"))
        return int(raw) if raw is not None else 0

    async def change_password(self, username: str, password: str) -> int:
        """Store a new password hash and bump the user's token version; returns the new version. Revoking the
        user's families and telling their clients is the caller's job (it knows which session to keep)."""
        if len(password) < MIN_PASSWORD_LENGTH:
            raise ValueError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
        encoded = await anyio.to_thread.run_sync(hash_password, password)
        await self._store.set(user_key(username, "password"), encoded.encode(), PERSISTENT_TTL)
        version = await self.version(username) + 1
        await self._store.set(user_key(username, "version"), str(version).encode(), PERSISTENT_TTL)
        return version


def user_claims(user: DemoUser, scope: str) -> dict[str, object]:
    """The claims about ``user`` that ``scope`` grants (OpenID Connect Core 5.4), for ID tokens and userinfo.
    ``role`` rides with ``profile``: the demo SPA shows it."""
    scopes = scope.split()
    claims: dict[str, object] = {"sub": user.sub}
    if "profile" in scopes:
        claims.update(name=user.name, preferred_username=user.username, role=user.role)
    if "email" in scopes:
        claims.update(email=user.email, email_verified=user.email_verified)
    return claims
