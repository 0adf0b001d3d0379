"""Signed request objects (JAR, RFC 9101): the authorization parameters as one JWT signed with the client's
private key (``[oidc] private_key_file``, the ``private_key_jwt`` key), so the IdP knows they come from this client
unaltered.

The object carries every authorization parameter plus ``iss`` (the client), ``aud`` (the issuer, RFC 9101 4),
``iat``, ``nbf``, a short ``exp`` and a fresh ``jti``; its header says ``typ: oauth-authz-req+jwt`` (RFC 9101
10.8) and names the key's ``kid``. The algorithm is the first of bff's allow-list (:data:`REQUEST_OBJECT_ALGS`)
that the key can make and the IdP lists in ``request_object_signing_alg_values_supported``.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

from joserfc import jwt
from joserfc.jwk import ECKey, Key, RSAKey

from bff.config.values import REQUEST_OBJECT_ALGS
from bff.types import Clock

#: RFC 9101 10.8: the ``typ`` of a request object.
REQUEST_OBJECT_TYP = "oauth-authz-req+jwt"
#: Lifetime of a request object: it is checked when pushed, or when the browser reaches the IdP seconds later.
REQUEST_OBJECT_TTL = 300


def request_object_alg(
    key: Key, supported: Sequence[str], *, allowed: Sequence[str] = REQUEST_OBJECT_ALGS
) -> str | None:
    """The algorithm to sign with: the first of ``allowed`` that ``key`` can make and the IdP supports (an IdP
    that lists none is taken to accept the first); None when there is none."""
    possible: tuple[str, ...]
    if isinstance(key, RSAKey):
        possible = ("PS256", "RS256")
    elif isinstance(key, ECKey) and key.curve_name == "P-256":
        possible = ("ES256",)
    else:
        possible = ()
    usable = [alg for alg in allowed if alg in possible]
    if supported:
        usable = [alg for alg in usable if alg in supported]
    return usable[0] if usable else None


class RequestObjectSigner:
    def __init__(self, key: Key, alg: str, *, client_id: str, audience: str, clock: Clock) -> None:
        self._key = key
        self.alg = alg
        self._client_id = client_id
        self._audience = audience
        self._clock = clock

    def sign(self, params: Mapping[str, str]) -> str:
        """``params`` as a signed request object; the registered claims are bff's, whatever ``params`` holds."""
        now = int(self._clock())
        claims: dict[str, str | int] = {
            **params,
            "iss": self._client_id,
            "aud": self._audience,
            "client_id": self._client_id,
            "iat": now,
            "nbf": now,
            "exp": now + REQUEST_OBJECT_TTL,
            "jti": secrets.token_urlsafe(32),
        }
        header = {"alg": self.alg, "typ": REQUEST_OBJECT_TYP, "kid": self._key.kid}
        return jwt.encode(header, claims, self._key, algorithms=[self.alg])

    def request(self, params: Mapping[str, str], *, pushed: bool) -> dict[str, str]:
        """The parameters that carry ``params`` as a signed request object. RFC 9101 5: ``client_id`` beside the
        object; OpenID Connect Core 6.1: ``response_type`` and ``scope`` too, unless the request is pushed (RFC 9126
        3: the pushed object is all there is)."""
        carried = {"client_id": self._client_id, "request": self.sign(params)}
        if not pushed:
            carried.update(response_type=params["response_type"], scope=params["scope"])
        return carried
