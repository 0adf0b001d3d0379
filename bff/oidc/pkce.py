"""PKCE (RFC 7636) and the one-time values of an authorization request (``state``, ``nonce``).

All values come from :mod:`secrets` and carry at least 256 bits, base64url-encoded without padding, so they are
valid in a URL and in a PKCE verifier (RFC 7636 4.1: ``[A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~"``).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

#: RFC 7636 4.1: 43 to 128 unreserved characters.
_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")


def new_code_verifier() -> str:
    """A fresh PKCE ``code_verifier``: 64 random bytes, 86 characters (RFC 7636 4.1 asks for 43 to 128)."""
    return secrets.token_urlsafe(64)


def s256_challenge(verifier: str) -> str:
    """The S256 ``code_challenge`` of ``verifier``: BASE64URL(SHA256(ASCII(verifier))) (RFC 7636 4.2)."""
    if not _VERIFIER.match(verifier):
        raise ValueError("a PKCE code_verifier is 43 to 128 unreserved characters (RFC 7636 4.1)")
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")  # base64url without padding (RFC 7636 3)


def new_state() -> str:
    """A fresh ``state`` for CSRF protection of the callback (RFC 6749 10.12): 256 bits."""
    return secrets.token_urlsafe(32)


def new_nonce() -> str:
    """A fresh ``nonce`` that binds the ID token to this login (OpenID Connect Core 3.1.2.1, 15.5.2): 256 bits."""
    return secrets.token_urlsafe(32)
