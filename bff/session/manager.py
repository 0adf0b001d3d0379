"""``SessionManager``: everything bff knows about sessions above the byte-level store.

It owns the store keys, serialisation, encryption, expiry and the indexes:

* ``{prefix}s:{digest(session id)}``: the encrypted session record. The session id itself (256 bits from
  ``secrets``) lives only in the browser's signed cookie; the store sees its SHA-256, so a store dump cannot be
  replayed as cookies.
* ``{prefix}l:{digest(state)}``: the one-time marker of a login state that a callback used, kept only while that
  state could still be presented (``login_timeout`` from its start). Pending logins themselves are not stored: each
  is sealed (``seal_login``) into a login cookie of the browser that started it, so an anonymous ``GET /bff/login``
  costs the store nothing, however many arrive.
* ``{prefix}u:{digest(sub)}`` and ``{prefix}i:{digest(sid)}``: sets of session keys of one user and of one IdP
  session, so "log out everywhere" and back-channel logout never scan the keyspace.
* ``{prefix}o:{digest(handle)}``: where a logout continues at the IdP (its end-session URL, which holds the ID
  token), one-time and short-lived, so that the browser only ever sees the opaque handle.
* ``{prefix}j:{digest([issuer, jti])}``: a back-channel logout token that was acted on, kept until the token
  would expire, so a replay is refused (Back-Channel Logout 1.0 section 2.6 step 7).

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

import base64
import binascii
import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter

from bff.config import SessionSettings
from bff.cookies import SESSION_SALT, CookieSigner
from bff.crypto import DecryptionError, Encryptor, derive_keys, digest, random_id
from bff.errors import SessionFormatUnsupported, SessionStoreUnavailable
from bff.models import LoginState, Session, TokenSet
from bff.session.accounting import CREATED as _CREATED
from bff.session.accounting import GETEX_ERRORS as _GETEX_ERRORS
from bff.session.accounting import GETEX_TIME as _GETEX_TIME
from bff.session.accounting import SessionEndReason, end_record
from bff.session.memo import DecodedMemo
from bff.session.record import UnsupportedFormat, decode_session_sized, encode_session
from bff.session.refresh_records import open_refresh_result, seal_refresh_result
from bff.session.store import SessionStore
from bff.types import Clock, JSONObject, system_clock

logger = logging.getLogger("bff.session")

SESSION_ENCRYPTION = "bff session record encryption v1"
LOGIN_ENCRYPTION = "bff login state encryption v1"
LOGOUT_SID = "bff logout sid v1"
LOGOUT_REDIRECT_ENCRYPTION = "bff logout redirect encryption v1"
#: Values of a back-channel logout token's blocklist entry (``{prefix}j:...``).
_LOGOUT_PENDING = b"pending"
_LOGOUT_DONE = b"done"
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
        self._logins = Encryptor(derive_keys(ring, bind(LOGIN_ENCRYPTION)))
        self._logout_keys = derive_keys(ring, bind(LOGOUT_SID))
        self._logout_redirects = Encryptor(derive_keys(ring, bind(LOGOUT_REDIRECT_ENCRYPTION)))
        self._cookie = CookieSigner(ring, bind(SESSION_SALT))
        # The records decoded last, checked against the store's bytes on every read (see bff.session.memo).
        self._decoded: DecodedMemo[Session | int | None] = DecodedMemo(self._decrypt, memo_bytes)

    # --- the cookie ----------------------------------------------------------------------------------------------

    def cookie_value(self, session_id: str) -> str:
        return self._cookie.sign(session_id)

    def session_id_from_cookie(self, value: str | None) -> str | None:
        """The session id in a cookie value, or None when absent or badly signed (then the store is not touched)."""
        return self._cookie.unsign(value)

    def logout_sid(self, session_id: str) -> str:
        """The ``sid`` query parameter of this session's ``logout_url``: a GET logout must carry it (a CSRF guard,
        as in Duende BFF). Derived from the session id with a keyed hash, so it reveals nothing about the id."""
        return self._logout_sid(self._logout_keys[-1], session_id)

    def check_logout_sid(self, session_id: str, candidate: str) -> bool:
        return any(
            hmac.compare_digest(self._logout_sid(k, session_id).encode(), candidate.encode("utf-8", "replace"))
            for k in self._logout_keys
        )

    @staticmethod
    def _logout_sid(key: bytes, session_id: str) -> str:
        mac = hmac.new(key, session_id.encode(), hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")

    # --- keys ----------------------------------------------------------------------------------------------------

    def key_for(self, session_id: str) -> str:
        return f"{self._prefix}s:{digest(session_id)}"

    def _user_index(self, sub: str) -> str:
        return f"{self._prefix}u:{digest(sub)}"

    def _sid_index(self, sid: str) -> str:
        return f"{self._prefix}i:{digest(sid)}"

    def _logout_redirect_key(self, handle: str) -> str:
        return f"{self._prefix}o:{digest(handle)}"

    def _login_key(self, state: str) -> str:
        return f"{self._prefix}l:{digest(state)}"

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
        key = self._result_key(spent_refresh_token)
        await self.store.set(key, seal_refresh_result(self._sessions, key, tokens, self._write_format), ttl)

    async def load_refresh_result(self, spent_refresh_token: str) -> TokenSet | None:
        """Raises ``SessionFormatUnsupported`` for a result in a format this release does not read: spending the
        token again instead could make the IdP revoke the token family (RFC 9700 4.14.2)."""
        key = self._result_key(spent_refresh_token)
        blob = await self.store.get(key)
        if blob is None:
            return None
        return open_refresh_result(self._sessions, key, blob)

    # --- logout continuations -------------------------------------------------------------------------------------

    async def save_logout_redirect(self, url: str, ttl: float) -> str:
        """Keep ``url`` (the IdP's end-session URL) for ``ttl`` seconds; returns the opaque one-time handle to it."""
        handle = random_id(32)
        key = self._logout_redirect_key(handle)
        await self.store.set(key, self._logout_redirects.encrypt(url.encode(), key.encode()), ttl)
        return handle

    async def take_logout_redirect(self, handle: str) -> str | None:
        """The URL saved under ``handle``, consumed: a second call, an expired or an unknown handle gives None."""
        key = self._logout_redirect_key(handle)
        blob = await self.store.take(key)
        if blob is None:
            return None
        try:
            url = self._logout_redirects.decrypt(blob, key.encode()).decode()
        except (DecryptionError, UnicodeDecodeError):
            logger.warning("unreadable logout continuation discarded")
            return None
        if not url:
            logger.warning("unreadable logout continuation discarded")
            return None
        if url[0] < " ":
            # Format 1 is the URL itself; a later format starts with its number, a byte no URL starts with.
            logger.warning("logout continuation has store format %d, which this release does not read", ord(url[0]))
            return None
        return url

    # --- back-channel logout tokens --------------------------------------------------------------------------------

    def _logout_token_key(self, issuer: str, jti: str) -> str:
        # jti is unique per issuer only (Back-Channel Logout 1.0 section 2.4), so the key names both.
        return f"{self._prefix}j:{digest(json.dumps([issuer, jti]))}"

    async def begin_logout_token(self, issuer: str, jti: str, until: float) -> bool:
        """Claim the logout token ``jti`` of ``issuer`` before acting on it (section 2.6 step 7: refuse replays).

        The claim lives until ``until`` (epoch seconds: when the token stops being acceptable), so the blocklist
        expires with the tokens it guards. True when the token may be acted on: its first delivery, or a retry of a
        delivery whose logout never finished (its claim is still "pending": the store failed halfway, or a Redis
        timeout left it unknown whether the claim was written). False when a logout with this ``jti`` completed.
        """
        key = self._logout_token_key(issuer, jti)
        ttl = max(until - self.clock(), 1.0)
        if await self.store.set_if_absent(key, _LOGOUT_PENDING, ttl):
            return True
        return await self.store.get(key) != _LOGOUT_DONE

    async def finish_logout_token(self, issuer: str, jti: str, until: float) -> None:
        """Mark the logout token as acted on: from now on ``begin_logout_token`` refuses it."""
        await self.store.set(self._logout_token_key(issuer, jti), _LOGOUT_DONE, max(until - self.clock(), 1.0))

    # --- login state ---------------------------------------------------------------------------------------------

    def seal_login(self, login: LoginState, name: str) -> str:
        """``login`` encrypted and authenticated (AES-256-GCM) for the cookie ``name``: a cookie value. The name is
        the associated data, so a sealed login moved under another cookie name does not open."""
        plaintext = json.dumps(login.to_json(), separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(self._logins.encrypt(plaintext, name.encode())).rstrip(b"=").decode("ascii")

    def open_login(self, sealed: str, name: str) -> LoginState | None:
        """The login sealed in the cookie ``name``, or None when the value was not sealed by this key ring for that
        name (tampered, truncated, foreign, or sealed with a key removed from the ring)."""
        try:
            blob = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
            login = LoginState.from_json(json.loads(self._logins.decrypt(blob, name.encode())))
        except (binascii.Error, DecryptionError, ValueError, KeyError, TypeError):
            return None
        if not all(isinstance(v, str) for v in (login.state, login.nonce, login.code_verifier, login.return_to)):
            return None
        if not isinstance(login.created_at, int | float) or isinstance(login.created_at, bool):
            return None
        return login

    async def consume_login(self, login: LoginState) -> bool:
        """Mark ``login`` used. True the first time, False ever after, on every instance that shares the store: a
        state is one-time (RFC 6749 10.12, RFC 9700 4.7.1), even for whoever kept a copy of its login cookie. The
        marker lives as long as the login could still be presented, then expires with it."""
        ttl = login.created_at + self.settings.login_timeout - self.clock()
        return await self.store.set_if_absent(self._login_key(login.state), b"1", max(ttl, 1.0))

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
