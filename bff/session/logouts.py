"""``LogoutRecords``: what a logout needs beside the session record.

* the ``sid`` query parameter of a session's ``logout_url``, which a GET logout must carry (a CSRF guard, as in
  Duende BFF): a keyed hash of the session id, so it reveals nothing about the id;
* ``{prefix}o:{digest(handle)}``: where a logout continues at the IdP (its end-session URL, which holds the ID
  token), encrypted, one-time and short-lived, so that the browser only ever sees the opaque handle;
* ``{prefix}j:{digest([issuer, jti])}``: a back-channel logout token that was acted on, kept until the token
  would expire, so a replay is refused (Back-Channel Logout 1.0 section 2.6 step 7).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Sequence

from bff.crypto import DecryptionError, Encryptor, derive_keys, digest, random_id
from bff.session.store import SessionStore
from bff.types import Clock

logger = logging.getLogger("bff.session")

LOGOUT_SID = "bff logout sid v1"
LOGOUT_REDIRECT_ENCRYPTION = "bff logout redirect encryption v1"
#: Values of a back-channel logout token's blocklist entry (``{prefix}j:...``).
_LOGOUT_PENDING = b"pending"
_LOGOUT_DONE = b"done"


class LogoutRecords:
    def __init__(
        self, store: SessionStore, ring: Sequence[str], bind: Callable[[str], str], *, prefix: str, clock: Clock
    ) -> None:
        self._store = store
        self._sid_keys = derive_keys(ring, bind(LOGOUT_SID))
        self._redirects = Encryptor(derive_keys(ring, bind(LOGOUT_REDIRECT_ENCRYPTION)))
        self._prefix = prefix
        self._clock = clock

    # --- the logout URL's sid --------------------------------------------------------------------------------------

    def sid_for(self, session_id: str) -> str:
        """The ``sid`` query parameter of this session's ``logout_url``, with the newest key of the ring."""
        return self._sid(self._sid_keys[-1], session_id)

    def check_sid(self, session_id: str, candidate: str) -> bool:
        return any(
            hmac.compare_digest(self._sid(k, session_id).encode(), candidate.encode("utf-8", "replace"))
            for k in self._sid_keys
        )

    @staticmethod
    def _sid(key: bytes, session_id: str) -> str:
        mac = hmac.new(key, session_id.encode(), hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")

    # --- logout continuations -------------------------------------------------------------------------------------

    def _redirect_key(self, handle: str) -> str:
        return f"{self._prefix}o:{digest(handle)}"

    async def save_redirect(self, url: str, ttl: float) -> str:
        """Keep ``url`` (the IdP's end-session URL) for ``ttl`` seconds; returns the opaque one-time handle to it."""
        handle = random_id(32)
        key = self._redirect_key(handle)
        await self._store.set(key, self._redirects.encrypt(url.encode(), key.encode()), ttl)
        return handle

    async def take_redirect(self, handle: str) -> str | None:
        """The URL saved under ``handle``, consumed: a second call, an expired or an unknown handle gives None."""
        key = self._redirect_key(handle)
        blob = await self._store.take(key)
        if blob is None:
            return None
        try:
            url = self._redirects.decrypt(blob, key.encode()).decode()
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

    def _token_key(self, issuer: str, jti: str) -> str:
        # jti is unique per issuer only (Back-Channel Logout 1.0 section 2.4), so the key names both.
        return f"{self._prefix}j:{digest(json.dumps([issuer, jti]))}"

    async def begin_token(self, issuer: str, jti: str, until: float) -> bool:
        """Claim the logout token ``jti`` of ``issuer`` before acting on it (section 2.6 step 7: refuse replays).

        The claim lives until ``until`` (epoch seconds: when the token stops being acceptable), so the blocklist
        expires with the tokens it guards. True when the token may be acted on: its first delivery, or a retry of a
        delivery whose logout never finished (its claim is still "pending": the store failed halfway, or a Redis
        timeout left it unknown whether the claim was written). False when a logout with this ``jti`` completed.
        """
        key = self._token_key(issuer, jti)
        ttl = max(until - self._clock(), 1.0)
        if await self._store.set_if_absent(key, _LOGOUT_PENDING, ttl):
            return True
        return await self._store.get(key) != _LOGOUT_DONE

    async def finish_token(self, issuer: str, jti: str, until: float) -> None:
        """Mark the logout token as acted on: from now on ``begin_token`` refuses it."""
        await self._store.set(self._token_key(issuer, jti), _LOGOUT_DONE, max(until - self._clock(), 1.0))
