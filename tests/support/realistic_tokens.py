"""Tokens of realistic size and entropy, as a Keycloak-like IdP issues them: an RS256 JWT access token of ~800 bytes,
an opaque 43-byte refresh token and an ~900-byte ID token, each with its own identifiers and signature. Used where
sizes matter: the compact session record's tests and the benchmark's Redis memory measurement."""

from __future__ import annotations

import base64
import json
import os
import secrets
import uuid

from bff.models import TokenSet

ISSUER = "https://login.example.com/realms/main"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _jwt(header: dict[str, object], claims: dict[str, object]) -> str:
    """A JWS compact serialisation of the shape an RS256 IdP issues: its signature is 256 random bytes."""
    encode = json.dumps
    head = _b64(encode(header, separators=(",", ":")).encode())
    body = _b64(encode(claims, separators=(",", ":")).encode())
    return f"{head}.{body}.{_b64(os.urandom(256))}"


def realistic_tokens(sub: str, sid: str, now: int) -> TokenSet:
    """Tokens as a Keycloak-like IdP issues them: ~800-byte access token, 43-byte refresh token, ~900-byte ID token."""
    kid = "rsa-2024-11"
    access = _jwt(
        {"alg": "RS256", "typ": "at+jwt", "kid": kid},
        {
            "iss": ISSUER,
            "sub": sub,
            "aud": ["orders-api", "catalog-api"],
            "exp": now + 300,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "client_id": "spa-bff",
            "sid": sid,
            "scope": "openid profile email offline_access",
        },
    )
    id_token = _jwt(
        {"alg": "RS256", "typ": "JWT", "kid": kid},
        {
            "iss": ISSUER,
            "sub": sub,
            "aud": "spa-bff",
            "exp": now + 300,
            "iat": now,
            "auth_time": now,
            "nonce": secrets.token_urlsafe(32),
            "sid": sid,
            "at_hash": _b64(os.urandom(16)),
            "name": "Alice Example",
            "email": "alice@example.com",
            "email_verified": True,
        },
    )
    return TokenSet(
        access_token=access,
        expires_at=now + 300,
        refresh_token=secrets.token_urlsafe(32),
        id_token=id_token,
        scope="openid profile email offline_access",
    )
