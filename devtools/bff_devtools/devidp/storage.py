"""The IdP's simple records: authorization codes, login transactions and the access-token blocklist.

Each class owns a few keys of ``records`` and nothing else; the token families, with their indexes and rotation,
are in ``families``.
"""

from __future__ import annotations

import secrets

from bff.session.store import SessionStore
from bff.types import Clock
from bff_devtools.devidp.records import (
    BLOCKLIST,
    AuthorizationCode,
    LoginTransaction,
    code_key,
    jti_member,
    login_key,
    nonce_key,
    parse_jti_member,
    secret_hash,
)

#: RFC 6749 4.1.2: "A maximum authorization code lifetime of 10 minutes is RECOMMENDED"; the client redeems it at
#: once, so one minute is plenty.
CODE_TTL = 60.0
#: How long a login form stays usable.
LOGIN_TTL = 600.0


class AuthorizationCodes:
    def __init__(self, store: SessionStore, *, id_token_ttl: float) -> None:
        self._store = store
        # A nonce is remembered while an ID token carrying it can still be presented.
        self._nonce_ttl = CODE_TTL + id_token_ttl

    async def save(self, code: str, record: AuthorizationCode) -> None:
        await self._store.set(code_key(code), record.to_bytes(), CODE_TTL)
        if record.nonce:
            await self._store.set(nonce_key(record.client_id, record.nonce), b"1", self._nonce_ttl)

    async def take(self, code: str) -> AuthorizationCode | None:
        """The code's record, deleted in the same step (GETDEL): a code is redeemed at most once, even by two
        concurrent requests (RFC 6749 4.1.2: "The client MUST NOT use the authorization code more than once")."""
        raw = await self._store.take(code_key(code))
        return None if raw is None else AuthorizationCode.from_bytes(raw)

    async def nonce_used(self, client_id: str, nonce: str) -> bool:
        return await self._store.get(nonce_key(client_id, nonce)) is not None


class LoginTransactions:
    """Login forms: each shown to one browser (identified by its binding cookie) and accepted once."""

    def __init__(self, store: SessionStore) -> None:
        self._store = store

    async def start(self, browser: str, params: list[tuple[str, str]] | None) -> str:
        tx = secrets.token_urlsafe(32)
        record = LoginTransaction(browser_hash=secret_hash(browser), params=params)
        await self._store.set(login_key(tx), record.to_bytes(), LOGIN_TTL)
        return tx

    async def get(self, tx: str, browser: str | None) -> LoginTransaction | None:
        """The transaction, if it exists and belongs to ``browser``; a form posted from another browser is refused
        (an attacker cannot log a victim into the attacker's account: login CSRF)."""
        raw = await self._store.get(login_key(tx))
        if raw is None or browser is None:
            return None
        record = LoginTransaction.from_bytes(raw)
        return record if secrets.compare_digest(record.browser_hash, secret_hash(browser)) else None

    async def finish(self, tx: str) -> bool:
        """Consume the transaction; False when it was consumed already (a form submitted twice)."""
        return await self._store.take(login_key(tx)) is not None


class Blocklist:
    """Revoked access tokens that have not expired yet: ``jti -> exp``, published at ``GET /blocklist``.

    One index set of ``jti:exp`` members, so reading it is O(size of the live blocklist): expired members are
    removed on read, and the set's TTL (which only grows) ends it when its last token expires.
    """

    def __init__(self, store: SessionStore, *, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def add(self, jti: str, exp: int) -> None:
        await self._store.index_add(BLOCKLIST, jti_member(jti, exp), exp - self._clock())

    async def live(self) -> dict[str, int]:
        now = self._clock()
        revoked: dict[str, int] = {}
        for member in await self._store.index_members(BLOCKLIST):
            parsed = parse_jti_member(member)
            if parsed is None or parsed[1] <= now:
                await self._store.index_remove(BLOCKLIST, member)
            else:
                revoked[parsed[0]] = parsed[1]
        return revoked

    async def contains(self, jti: str) -> bool:
        return jti in await self.live()
