"""The IdP as a resource server sees it: discovery, a JWKS and the jti blocklist, plus a minter of access tokens
(``typ: at+jwt``) signed with the keys it publishes, and forgeries made the way an attacker would make them.

    keys = KeyServer()
    with serve(keys.app) as url:
        keys.issuer = url
        token = keys.mint(sub="alice", role="admin")
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, Key, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

AUDIENCE = "demo-api"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64json(value: Mapping[str, Any]) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def ec_key(kid: str) -> ECKey:
    return ECKey.generate_key("P-256", {"kid": kid, "use": "sig", "alg": "ES256"}, private=True)


def rsa_key(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, {"kid": kid, "use": "sig", "alg": "RS256"}, private=True)


@functools.cache
def _shared_rsa_key() -> RSAKey:
    """One RSA key for every test: generating 2048-bit keys costs ~0.1 s each."""
    return rsa_key("rsa-1")


class KeyServer:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.issuer = "http://issuer.invalid"
        self.keys: list[Key] = [ec_key("ec-1"), _shared_rsa_key()]
        self.revoked: dict[str, int] = {}
        self.blocklist_status = 200
        self.jwks_fetches = 0
        self.blocklist_fetches = 0
        self.app = Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self._discovery),
                Route("/jwks", self._jwks),
                Route("/blocklist", self._blocklist),
            ]
        )

    async def _discovery(self, request: Request) -> Response:
        return JSONResponse({"issuer": self.issuer, "jwks_uri": self.issuer + "/jwks"})

    async def _jwks(self, request: Request) -> Response:
        self.jwks_fetches += 1
        return JSONResponse({"keys": [key.as_dict(private=False) for key in self.keys]})

    async def _blocklist(self, request: Request) -> Response:
        self.blocklist_fetches += 1
        if self.blocklist_status != 200:
            return JSONResponse({"error": "down"}, status_code=self.blocklist_status)
        return JSONResponse({"revoked_jtis": self.revoked})

    def key(self, kid: str) -> Key:
        return next(key for key in self.keys if key.kid == kid)

    def rsa_public_pem(self) -> bytes:
        key = self.key("rsa-1")
        assert isinstance(key, RSAKey)
        return key.as_pem(private=False)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "alice",
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
            "scope": "openid profile",
            "role": "admin",
            "client_id": "spa-bff",
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def mint(self, *, kid: str = "ec-1", key: Key | None = None, typ: str | None = "at+jwt", **claims: Any) -> str:
        key = key or self.key(kid)
        alg = "ES256" if key.key_type == "EC" else "RS256"
        header = {"alg": alg, "kid": kid, **({"typ": typ} if typ else {})}
        return jwt.encode(header, self.claims(**claims), key, algorithms=[alg])

    def forge_alg_none(self, **claims: Any) -> str:
        """RFC 7519 6.1 unsecured JWT: ``alg: none`` and an empty signature."""
        return f"{_b64json({'alg': 'none', 'typ': 'at+jwt'})}.{_b64json(self.claims(**claims))}."

    def forge_hs256_with_public_key(self, **claims: Any) -> str:
        """The RS256-to-HS256 confusion: an HMAC keyed with the RSA public key's PEM, which the attacker knows."""
        header = _b64json({"alg": "HS256", "kid": "rsa-1", "typ": "at+jwt"})
        payload = _b64json(self.claims(**claims))
        secret = self.rsa_public_pem()
        signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{_b64(signature)}"
