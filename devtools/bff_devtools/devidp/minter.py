"""The IdP's own JWTs, minted and checked with joserfc: access tokens (RFC 9068) and logout tokens (OpenID Connect
Back-Channel Logout 1.0). ID tokens are minted by authlib's ``OpenIDCode`` extension (see ``grants``), which also
signs with joserfc, with the same key.

Access tokens carry what an API needs to authorize a call and nothing more: ``iss``, ``sub``, ``aud``, ``exp``,
``iat``, ``jti``, ``client_id``, ``scope``, the user's ``role``, and the login's ``acr`` and ``auth_time`` (RFC 9068
2.2.1), which an API asking for a step-up (RFC 9470) reads. No email, no name: an access token travels to
every API it is sent to, and it stays well under 1 KB (the test suite checks), so it fits in any header budget.
There is no version claim: a revoked token's ``jti`` is published in ``/blocklist`` instead.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from joserfc import jwt
from joserfc.errors import JoseError

from bff.types import Clock, JSONObject
from bff_devtools.devidp.keys import KeyRing
from bff_devtools.devidp.settings import DevIdPSettings

ACCESS_TOKEN_TYP = "at+jwt"  # noqa: S105 - a JWT "typ", not a password
LOGOUT_TOKEN_TYP = "logout+jwt"  # noqa: S105 - a JWT "typ", not a password
BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
#: Back-Channel Logout 1.0 section 2.4 recommends a short lifetime: the RP acts on the token at once.
LOGOUT_TOKEN_TTL = 120


@dataclass(frozen=True)
class AccessToken:
    token: str
    jti: str
    exp: int


class TokenMinter:
    def __init__(self, settings: DevIdPSettings, keys: KeyRing, *, clock: Clock) -> None:
        self._settings = settings
        self._keys = keys
        self._clock = clock

    def access_token(
        self,
        *,
        client_id: str,
        sub: str,
        scope: str,
        audience: str,
        role: str | None,
        binding: str | None = None,
        jkt: str | None = None,
        acr: str | None = None,
        auth_time: int | None = None,
    ) -> AccessToken:
        """An RFC 9068 JWT access token (section 2.2 lists the claims; ``typ: at+jwt`` per section 2.1), bound to
        the client's certificate (``binding``, RFC 8705 3.1 ``cnf.x5t#S256``) and/or to the DPoP key with thumbprint
        ``jkt`` (RFC 9449 6.1 ``cnf.jkt``) when given."""
        now = int(self._clock())
        exp = now + int(self._settings.access_token_ttl)
        jti = secrets.token_urlsafe(16)
        claims: JSONObject = {
            "iss": self._settings.issuer,
            "sub": sub,
            "aud": audience,
            "exp": exp,
            "iat": now,
            "jti": jti,
            "client_id": client_id,
            "scope": scope,
        }
        if role is not None:
            claims["role"] = role
        if acr is not None and auth_time is not None:  # RFC 9068 2.2.1: the login's level, for step-up (RFC 9470)
            claims["acr"] = acr
            claims["auth_time"] = auth_time
        cnf: JSONObject = {}
        if binding is not None:
            cnf["x5t#S256"] = binding  # RFC 8705 3.1: bound to the client's certificate
        if jkt is not None:
            cnf["jkt"] = jkt  # RFC 9449 6.1: bound to the DPoP proof's key
        if cnf:
            claims["cnf"] = cnf
        return AccessToken(self._keys.sign(claims, typ=ACCESS_TOKEN_TYP), jti, exp)

    def logout_token(self, *, client_id: str, sub: str, sid: str) -> str:
        """A logout token (Back-Channel Logout 1.0 section 2.4): ``events`` names the logout; no ``nonce``."""
        now = int(self._clock())
        claims: JSONObject = {
            "iss": self._settings.issuer,
            "aud": client_id,
            "iat": now,
            "exp": now + LOGOUT_TOKEN_TTL,
            "jti": secrets.token_urlsafe(16),
            "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
            "sub": sub,
            "sid": sid,
        }
        return self._keys.sign(claims, typ=LOGOUT_TOKEN_TYP)

    def verify(self, token: str, *, typ: str) -> JSONObject | None:
        """The claims of a token this IdP signed (any published key) with header ``typ``, or None.

        Checks the signature and ``iss`` only; whether an expired token still counts is the caller's decision
        (revocation accepts one, RFC 7009 2.2 answers 200 either way; ``/userinfo`` does not).
        """
        try:
            decoded = jwt.decode(token, self._keys.verification_keys(), algorithms=self._keys.algorithms())
        except (JoseError, ValueError):
            return None
        if decoded.header.get("typ") != typ or decoded.claims.get("iss") != self._settings.issuer:
            return None
        return dict(decoded.claims)
