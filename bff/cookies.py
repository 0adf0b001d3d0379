"""Cookies: signing (itsdangerous lives only here) and ``Set-Cookie`` values.

The session cookie carries only a signed random id; everything else is server-side. Its name has the ``__Host-``
prefix, so browsers insist on ``Secure``, ``Path=/`` and no ``Domain`` (RFC 6265bis 4.1.3.2). The login cookie binds a
pending login to the browser that started it (one cookie per pending login, ``bff.endpoints.login``); it is
``SameSite=Lax`` because the IdP's redirect back to ``/bff/callback`` is a cross-site top-level navigation, on which
``Strict`` cookies are not sent.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from collections.abc import Sequence
from http.cookies import SimpleCookie
from typing import Literal

from itsdangerous import Signer

SESSION_SALT = "bff.session-cookie"
MAX_COOKIE_VALUE = 512
#: Cookie values whose verification is remembered (each entry a few hundred bytes): more than the sessions a worker
#: keeps decoded (``bff.session.manager.DECODED_MEMO_BYTES``), so a session read from the memo is not re-verified.
VERIFIED_CACHE_SIZE = 16_384


class CookieSigner:
    """Signs and verifies cookie values with a rotating key ring: the newest key signs, any key verifies."""

    def __init__(self, keys: Sequence[str], salt: str) -> None:
        # itsdangerous: secret_key may be a list "from oldest to newest. The newest (last) key is used for signing".
        self._signer = Signer(secret_key=list(keys), salt=salt, digest_method=hashlib.sha256)
        # Verification is the same construction with the stdlib: itsdangerous's "django-concat" key derivation
        # (SHA-256 of salt + "signer" + key) done once per key, then HMAC-SHA256 (RFC 2104) of the value compared in
        # constant time with the unpadded base64url signature. Newest key first, as itsdangerous tries them.
        self._verify_keys = [hashlib.sha256(f"{salt}signer{key}".encode()).digest() for key in reversed(keys)]
        # A browser sends the same cookie with every API call, and verifying it (a key derivation and an HMAC per
        # key of the ring) is a pure function of the value: remembered for the values seen last.
        # The key ring is fixed for the signer's life, so a remembered answer is the one verifying again would give.
        self._verified = functools.lru_cache(maxsize=VERIFIED_CACHE_SIZE)(self._verify)

    def sign(self, value: str) -> str:
        return self._signer.sign(value).decode("ascii")

    def unsign(self, signed: str | None) -> str | None:
        """The value, or None when absent, oversized or badly signed (the store is never touched for those)."""
        if not signed or len(signed) > MAX_COOKIE_VALUE:
            return None
        return self._verified(signed)

    def _verify(self, signed: str) -> str | None:
        try:
            value, separator, signature = signed.encode("ascii").rpartition(b".")
        except UnicodeError:
            return None
        if not separator:
            return None
        # Only the canonical encoding of the MAC is accepted, which is what ``sign`` produces.
        for key in self._verify_keys:
            expected = base64.urlsafe_b64encode(hmac.digest(key, value, "sha256")).rstrip(b"=")
            if hmac.compare_digest(expected, signature):
                return value.decode("ascii")
        return None


def read_cookie(header: str | None, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` header, or None. Malformed headers yield None."""
    if not header:
        return None
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"') or None
    return None


def read_cookies_with_prefix(header: str | None, prefix: str, *, limit: int) -> list[tuple[str, str]]:
    """The first ``limit`` cookies of a ``Cookie`` header whose name starts with ``prefix``, as (name, value) pairs
    in the order sent; later ones are ignored, so a request stuffed with cookies costs a bounded amount of work."""
    found: list[tuple[str, str]] = []
    if not header:
        return found
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key.startswith(prefix):
            found.append((key, value.strip().strip('"')))
            if len(found) >= limit:
                break
    return found


def set_cookie(
    name: str,
    value: str,
    *,
    max_age: int | None = None,
    same_site: Literal["strict", "lax"] = "strict",
    path: str = "/",
) -> str:
    """A ``Set-Cookie`` header value: always ``HttpOnly; Secure``, never ``Domain``."""
    cookie: SimpleCookie = SimpleCookie()
    cookie[name] = value
    morsel = cookie[name]
    morsel["path"] = path
    morsel["httponly"] = True
    morsel["secure"] = True
    morsel["samesite"] = same_site.capitalize()
    if max_age is not None:
        morsel["max-age"] = max(0, int(max_age))
    return morsel.OutputString()


def clear_cookie(name: str, *, same_site: Literal["strict", "lax"] = "strict") -> str:
    return set_cookie(name, "", max_age=0, same_site=same_site) + "; expires=Thu, 01 Jan 1970 00:00:00 GMT"
