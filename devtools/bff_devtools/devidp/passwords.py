"""Password hashing for the demo users: scrypt (RFC 7914) from the standard library.

An encoded hash is ``scrypt$<n>$<r>$<p>$<salt>$<hash>`` (salt and hash unpadded base64url), so the cost parameters
travel with the hash and can be raised later without breaking the stored ones. The parameters are OWASP's minimum
for scrypt (n = 2**17 is their first choice; 2**14 keeps a login under ~50 ms on a laptop, which matters more for
a development IdP whose test suite logs in dozens of times).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

_N, _R, _P = 2**14, 8, 1
_SALT_BYTES = 16
_HASH_BYTES = 32


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    # maxmem: scrypt needs 128 * n * r bytes; OpenSSL's default cap (32 MiB) is just enough for n = 2**14, r = 8.
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r, dklen=_HASH_BYTES)


def hash_password(password: str) -> str:
    """A fresh salted scrypt hash of ``password``, encoded with its parameters."""
    salt = secrets.token_bytes(_SALT_BYTES)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(_scrypt(password, salt, _N, _R, _P))}"


@functools.cache
def _dummy_hash() -> str:
    """Checked when the user does not exist, so an unknown name costs as long as a wrong password."""
    return hash_password(secrets.token_urlsafe(16))


def verify_password(password: str, encoded: str | None) -> bool:
    """True when ``password`` matches ``encoded``, compared in constant time. ``None`` (no such user) is False
    after the same work as a real check, so response times do not reveal which user names exist."""
    known = encoded is not None
    try:
        scheme, n, r, p, salt, expected = (encoded or _dummy_hash()).split("$")
        if scheme != "scrypt":
            return False
        actual = _scrypt(password, _unb64(salt), int(n), int(r), int(p))
    except ValueError:  # malformed: wrong field count, bad base64 or numbers, or scrypt refusing the parameters
        return False
    return hmac.compare_digest(actual, _unb64(expected)) and known
