"""``LoginStates``: the login state a browser carries, and the one-time marker that spends it.

Pending logins are not stored: each is sealed (AES-256-GCM) into a login cookie of the browser that started it, so
an anonymous ``GET /bff/login`` costs the store nothing, however many arrive. The callback spends the state with
``{prefix}l:{digest(state)}``, kept only while that state could still be presented (``login_timeout`` from its
start), so a state is one-time on every instance that shares the store.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence

from bff.crypto import DecryptionError, Encryptor, derive_keys, digest
from bff.models import LoginState
from bff.session.store import SessionStore
from bff.types import Clock

LOGIN_ENCRYPTION = "bff login state encryption v1"


class LoginStates:
    def __init__(
        self,
        store: SessionStore,
        ring: Sequence[str],
        bind: Callable[[str], str],
        *,
        prefix: str,
        clock: Clock,
        login_timeout: float,
    ) -> None:
        self._store = store
        self._logins = Encryptor(derive_keys(ring, bind(LOGIN_ENCRYPTION)))
        self._prefix = prefix
        self._clock = clock
        self._login_timeout = login_timeout

    def _key(self, state: str) -> str:
        return f"{self._prefix}l:{digest(state)}"

    def seal(self, login: LoginState, name: str) -> str:
        """``login`` encrypted and authenticated (AES-256-GCM) for the cookie ``name``: a cookie value. The name is
        the associated data, so a sealed login moved under another cookie name does not open."""
        plaintext = json.dumps(login.to_json(), separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(self._logins.encrypt(plaintext, name.encode())).rstrip(b"=").decode("ascii")

    def open(self, sealed: str, name: str) -> LoginState | None:
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

    async def consume(self, login: LoginState) -> bool:
        """Mark ``login`` used. True the first time, False ever after, on every instance that shares the store: a
        state is one-time (RFC 6749 10.12, RFC 9700 4.7.1), even for whoever kept a copy of its login cookie. The
        marker lives as long as the login could still be presented, then expires with it."""
        ttl = login.created_at + self._login_timeout - self._clock()
        return await self._store.set_if_absent(self._key(login.state), b"1", max(ttl, 1.0))
