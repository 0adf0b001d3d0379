"""``SessionManager``: everything bff knows about sessions above the byte-level store.

It owns the store keys, serialisation, encryption, expiry and the indexes:

* ``{prefix}s:{digest(session id)}``: the encrypted session record. The session id itself (256 bits from
  ``secrets``) lives only in the browser's signed cookie; the store sees its SHA-256, so a store dump cannot be
  replayed as cookies.
* ``{prefix}u:{digest(sub)}`` and ``{prefix}i:{digest(sid)}``: sets of session keys of one user and of one IdP
  session, so "log out everywhere" and back-channel logout never scan the keyspace.
* ``{prefix}r:{digest(refresh token)}``, ``{prefix}p:{digest(refresh token)}`` and ``{prefix}q:{digest(refresh
  token and mark)}``: what a spent refresh token was exchanged for, the mark of one being presented, and the note
  that such a mark was renounced (``bff.tokens.spending``); ``{prefix}v:{digest(refresh token)}``: what it was
  exchanged for when the new ID token could not be checked yet (the IdP's keys did not answer), never served before
  a later refresh checks it.

Beside the sessions, with the same key ring and prefix: ``logins`` (``bff.session.logins``: the sealed login state
and its one-time marker) and ``logouts`` (``bff.session.logouts``: the logout URL's ``sid``, logout continuations,
the back-channel logout token blocklist).

Metrics: sessions created and ended (by reason, counted where bff deletes a record it found, so a session is
ended once however many requests race to end it), and the per-request ``get_and_touch``, metered inline in
``load_key`` (every other store call is metered by ``bff.session.metered_store``); the counters are
``bff.session.accounting``'s.

Records are compact JSON (``bff.session.record``: JWTs unpacked, DEFLATE) encrypted with AES-256-GCM
(``bff.crypto.Encryptor``) with the store key as associated data. Records and refresh results carry a format number;
every known format is read and ``[session] write_format`` is written, so old and new releases share one store
during a rolling update (the inventory of every stored structure is docs/storage-formats.md).

Expiry: each record's store TTL is ``min(idle_timeout, absolute expiry, refresh-token expiry) - now``; reading
with ``slide=True`` pushes it forward (sliding idle timeout) in the same round trip as the read
(``SessionStore.get_and_touch``), never past the absolute expiry. Expired means gone: bff never has to remember to
delete.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter

from bff.config import SessionSettings
from bff.cookies import SESSION_SALT, CookieSigner
from bff.crypto import DecryptionError, Encryptor, derive_keys, digest, random_id
from bff.errors import SessionFormatUnsupported, SessionStoreUnavailable
from bff.models import Session, TokenSet
from bff.session.accounting import CREATED as _CREATED
from bff.session.accounting import GETEX_ERRORS as _GETEX_ERRORS
from bff.session.accounting import GETEX_TIME as _GETEX_TIME
from bff.session.accounting import SessionEndReason, end_record
from bff.session.logins import LoginStates
from bff.session.logouts import LogoutRecords
from bff.session.memo import DecodedMemo
from bff.session.record import UnsupportedFormat, decode_session_sized, encode_session
from bff.session.refresh_records import open_refresh_result, seal_refresh_result
from bff.session.store import SessionStore
from bff.types import Clock, JSONObject, system_clock

logger = logging.getLogger("bff.session")

SESSION_ENCRYPTION = "bff session record encryption v1"
#: Estimated bytes of decoded session records kept per process (``bff.session.memo``): room for the benchmark's
#: 10,000 sessions with realistic tokens, within the Helm chart's memory limit (docs/performance.md).
DECODED_MEMO_BYTES = 64 * 1024 * 1024
#: Store TTLs are whole milliseconds: a TTL within this of the idle timeout is the idle timeout.
_TTL_RESOLUTION = 0.001


def purpose_of(frontend: str) -> Callable[[str], str]:
    """The key-derivation label (and cookie salt) of a purpose for ``frontend``; unchanged for the single frontend,
    so its cookies and records stay valid across an upgrade."""
    return (lambda purpose: purpose) if not frontend else (lambda purpose: f"{purpose} frontend={frontend}")


@dataclass(frozen=True)
class LoadedSession:
    """A session as read from the store, with what a compare-and-set write needs."""

    key: str
    session: Session
    #: The exact bytes read: ``compare_and_set`` succeeds only if nobody wrote since.
    raw: bytes


class SessionManager:
    def __init__(
        self,
        store: SessionStore,
        settings: SessionSettings,
        *,
        clock: Clock = system_clock,
        prefix: str = "",
        frontend: str = "",
        memo_bytes: int = DECODED_MEMO_BYTES,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self._prefix = prefix
        self._write_format = settings.write_format
        ring = [k.reveal() for k in settings.keys]
        # One of several frontends (bff.config.frontends) signs and encrypts with its own keys, so nothing one
        # frontend issued verifies at another, whatever the cookie's name or the store key.
        bind = purpose_of(frontend)
        self._sessions = Encryptor(derive_keys(ring, bind(SESSION_ENCRYPTION)))
        self._cookie = CookieSigner(ring, bind(SESSION_SALT))
        self.logins = LoginStates(store, ring, bind, prefix=prefix, clock=clock, login_timeout=settings.login_timeout)
        self.logouts = LogoutRecords(store, ring, bind, prefix=prefix, clock=clock)
        # The records decoded last, checked against the store's bytes on every read (see bff.session.memo).
        self._decoded: DecodedMemo[Session | int | None] = DecodedMemo(self._decrypt, memo_bytes)

    # --- the cookie ----------------------------------------------------------------------------------------------

    def cookie_value(self, session_id: str) -> str:
        return self._cookie.sign(session_id)

    def session_id_from_cookie(self, value: str | None) -> str | None:
        """The session id in a cookie value, or None when absent or badly signed (then the store is not touched)."""
        return self._cookie.unsign(value)

    # --- keys ----------------------------------------------------------------------------------------------------

    def key_for(self, session_id: str) -> str:
        return f"{self._prefix}s:{digest(session_id)}"

    def _user_index(self, sub: str) -> str:
        return f"{self._prefix}u:{digest(sub)}"

    def _sid_index(self, sid: str) -> str:
        return f"{self._prefix}i:{digest(sid)}"

    @staticmethod
    def handle_for(session_key: str) -> str:
        """A short name for a session in admin output: the start of its store key's digest. The key is a hash of
        the session id, so the handle can neither be turned into a cookie nor be used to find the id."""
        return session_key.rpartition(":")[2][:12]

    def refresh_lock_key(self, session_key: str) -> str:
        """The cross-process lock that makes refreshing one session single-flight."""
        return f"{self._prefix}lock:{session_key.rpartition(':')[2]}"

    def _result_key(self, spent_refresh_token: str) -> str:
        return f"{self._prefix}r:{digest(spent_refresh_token)}"

    def _unchecked_key(self, spent_refresh_token: str) -> str:
        return f"{self._prefix}v:{digest(spent_refresh_token)}"

    def spending_key(self, refresh_token: str) -> str:
        """The mark saying ``refresh_token`` is being presented to the IdP (``bff.tokens.spending``)."""
        return f"{self._prefix}p:{digest(refresh_token)}"

    def renounced_key(self, refresh_token: str, mark: str) -> str:
        """The note that the spending mark ``mark`` on ``refresh_token`` was renounced: its holder never got an
        answer from the IdP, so the mark, wherever and whenever it lands, holds nothing back."""
        return f"{self._prefix}q:{digest(f'{refresh_token} {mark}')}"

    # --- expiry --------------------------------------------------------------------------------------------------

    def ttl_for(self, session: Session, now: float) -> float:
        """Seconds the record may live from ``now``: idle timeout, capped by the absolute and refresh expiries."""
        limit = min(now + self.settings.idle_timeout, session.expires_at)
        if session.tokens.refresh_expires_at is not None:
            limit = min(limit, session.tokens.refresh_expires_at)
        return limit - now

    def idle_expires_at(self, session: Session, now: float) -> float:
        return now + self.ttl_for(session, now)

    # --- sessions ------------------------------------------------------------------------------------------------

    async def create(self, *, sub: str, sid: str | None, claims: JSONObject, tokens: TokenSet) -> tuple[str, Session]:
        """Store a new session under a fresh id (a new id at every login: no fixation). Returns (id, session)."""
        now = self.clock()
        session = Session(
            sub=sub,
            sid=sid,
            claims=claims,
            tokens=tokens,
            created_at=now,
            last_seen=now,
            expires_at=now + self.settings.absolute_timeout,
        )
        ttl = self.ttl_for(session, now)
        session_id = random_id(32)
        key = self.key_for(session_id)
        await self.store.set(key, self._encrypt(key, session), ttl)
        # Indexes live as long as the longest session they may point to; stale members are pruned on read.
        index_ttl = session.expires_at - now
        await self.store.index_add(self._user_index(sub), key, index_ttl)
        if sid:
            await self.store.index_add(self._sid_index(sid), key, index_ttl)
        _CREATED.inc()
        return session_id, session

    async def load(self, session_id: str, *, slide: bool = True, strict: bool = True) -> LoadedSession | None:
        """The live session for this id, or None (unknown, expired, or unreadable). Slides the idle timeout.
        ``strict``: a record in a format this release does not read raises ``SessionFormatUnsupported`` (otherwise
        it is None, as an unreadable one)."""
        key = self.key_for(session_id)
        return await self.load_key(key, slide=slide, strict=strict)

    async def load_key(self, key: str, *, slide: bool = False, strict: bool = False) -> LoadedSession | None:
        # Sliding costs one round trip on every proxied request: GETEX sets the TTL to the idle timeout
        # as it reads, because the cap (absolute and refresh-token expiry) is inside the encrypted record. Only in a
        # session's last idle timeout, when the cap is nearer, does a second call shorten the TTL to it. Between the
        # two calls (or if the second never happens) the record may outlive its cap in the store, never in use:
        # every read checks the cap below.
        idle = self.settings.idle_timeout
        if slide:
            start = perf_counter()
            try:
                raw = await self.store.get_and_touch(key, idle)
            except SessionStoreUnavailable:
                _GETEX_ERRORS.inc()
                raise
            finally:
                _GETEX_TIME.observe(perf_counter() - start)
        else:
            raw = await self.store.get(key)
        if raw is None:
            return None
        session = self._decoded(key, raw)
        if isinstance(session, int):
            if strict:
                raise SessionFormatUnsupported(
                    f"this session is in store format {session}, written by a newer release of bff"
                )
            return None
        if session is None:
            return None
        now = self.clock()
        ttl = self.ttl_for(session, now)
        if ttl <= 0:
            await self.end_key(key, reason="expired")
            return None
        if slide and ttl < idle - _TTL_RESOLUTION:
            await self.store.touch(key, ttl)
        return LoadedSession(key=key, session=session, raw=raw)

    async def replace(self, loaded: LoadedSession, session: Session) -> LoadedSession | None:
        """Compare-and-set write: stores ``session`` only if the record still holds ``loaded.raw``. Returns the new
        state, or None when someone else wrote (or deleted) it first; the caller reloads and decides again."""
        now = self.clock()
        session = session.evolve(version=loaded.session.version + 1)
        ttl = self.ttl_for(session, now)
        blob = self._encrypt(loaded.key, session)
        if ttl <= 0:
            await self.end_key(loaded.key, reason="expired")
            return None
        if not await self.store.compare_and_set(loaded.key, loaded.raw, blob, ttl):
            return None
        return LoadedSession(key=loaded.key, session=session, raw=blob)

    async def delete(self, loaded: LoadedSession, *, reason: SessionEndReason) -> None:
        """End the session: its record and its index entries go. Counted as ended for ``reason`` only if the record
        was still there, so two requests racing to end one session count it once."""
        await self.end_key(loaded.key, reason=reason)
        await self.store.index_remove(self._user_index(loaded.session.sub), loaded.key)
        if loaded.session.sid:
            await self.store.index_remove(self._sid_index(loaded.session.sid), loaded.key)

    async def delete_key(self, key: str, *, reason: SessionEndReason) -> LoadedSession | None:
        """Delete the session stored under ``key`` (from an index); returns what was deleted, if it was readable."""
        loaded = await self.load_key(key)
        if loaded is not None:
            await self.delete(loaded, reason=reason)
        else:
            await self.end_key(key, reason=reason)
        return loaded

    async def end_key(self, key: str, *, reason: SessionEndReason) -> bool:
        """Delete the record under ``key`` (indexes untouched: they prune themselves on read); True, and counted as
        ended for ``reason``, when there was one."""
        self._decoded.forget(key)
        return await end_record(self.store, key, reason=reason)

    async def keys_for_sub(self, sub: str) -> list[str]:
        return await self._live_members(self._user_index(sub))

    async def keys_for_sid(self, sid: str) -> list[str]:
        return await self._live_members(self._sid_index(sid))

    async def _live_members(self, index: str) -> list[str]:
        live: list[str] = []
        for key in await self.store.index_members(index):
            if await self.store.ttl(key) is None:
                await self.store.index_remove(index, key)  # the session expired on its own
            else:
                live.append(key)
        return live

    # --- refresh results ------------------------------------------------------------------------------------------

    async def save_refresh_result(self, spent_refresh_token: str, tokens: TokenSet, ttl: float) -> None:
        """Remember, briefly, what a refresh token was exchanged for, keyed by a hash of the spent token: a request
        that still holds the old tokens picks the new ones up instead of replaying a spent refresh token (which an
        IdP with reuse detection answers by revoking the whole token family)."""
        await self._seal_tokens(self._result_key(spent_refresh_token), tokens, ttl)

    async def load_refresh_result(self, spent_refresh_token: str) -> TokenSet | None:
        """Raises ``SessionFormatUnsupported`` for a result in a format this release does not read: spending the
        token again instead could make the IdP revoke the token family (RFC 9700 4.14.2)."""
        return await self._open_tokens(self._result_key(spent_refresh_token))

    async def save_unchecked_refresh_result(self, spent_refresh_token: str, tokens: TokenSet, ttl: float) -> None:
        """Keep what a refresh token was exchanged for when the new ID token could not be checked (OpenID Connect
        Core 12.2; the IdP's keys did not answer): the IdP has spent the old token, so the next refresh checks these
        again (``load_unchecked_refresh_result``) instead of presenting it (RFC 9700 4.14.2). Sealed like a refresh
        result, under a key of its own: nothing reads it as one."""
        await self._seal_tokens(self._unchecked_key(spent_refresh_token), tokens, ttl)

    async def load_unchecked_refresh_result(self, spent_refresh_token: str) -> TokenSet | None:
        """What ``save_unchecked_refresh_result`` kept, to be checked before any use."""
        return await self._open_tokens(self._unchecked_key(spent_refresh_token))

    async def _seal_tokens(self, key: str, tokens: TokenSet, ttl: float) -> None:
        await self.store.set(key, seal_refresh_result(self._sessions, key, tokens, self._write_format), ttl)

    async def _open_tokens(self, key: str) -> TokenSet | None:
        blob = await self.store.get(key)
        return None if blob is None else open_refresh_result(self._sessions, key, blob)

    # --- encryption ----------------------------------------------------------------------------------------------

    def _encrypt(self, key: str, session: Session) -> bytes:
        return self._sessions.encrypt(encode_session(session, self._write_format), key.encode())

    def _decrypt(self, key: str, raw: bytes) -> tuple[Session | int | None, int]:
        """The session; or the number of a store format this release does not read (memoised like a session, so
        the warning is logged once per record, not once per request); or None when unreadable. With the length of
        the decoded text (0 when there is none)."""
        try:
            return decode_session_sized(self._sessions.decrypt(raw, key.encode()))
        except UnsupportedFormat as exc:
            # Authenticated with this key ring, so a newer bff wrote it: keep it for the instances that read it.
            logger.warning(
                "session record has store format %d, which this release does not read (written by a newer release?"
                " see [session] write_format); the record is kept",
                exc.number,
            )
            return exc.number, 0
        except DecryptionError:
            # Written with a key that was removed from the ring, or tampered with: unusable, like an expired one.
            logger.warning("session record could not be decrypted (key removed from the ring?)")
            return None, 0
        except (ValueError, KeyError, TypeError):
            logger.warning("session record is malformed")
            return None, 0
