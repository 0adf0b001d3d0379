"""What the client's own keys (``ClientRegistration.jwks``) verify: its ``private_key_jwt`` assertions (RFC 7523,
authlib's ``JWTBearerClientAssertion``) and its signed request objects (RFC 9101, checked here with joserfc).

A request object is hostile input: at most :data:`MAX_REQUEST_OBJECT` characters, signed with one of
:data:`REQUEST_OBJECT_ALGS` by a registered key, ``typ: oauth-authz-req+jwt`` (RFC 9101 10.8), ``iss`` and
``client_id`` the client, ``aud`` this issuer, ``exp`` and ``nbf`` present, current and at most an hour apart (FAPI
2.0 Message Signing 5.3.1), no nested ``request`` or ``request_uri`` (RFC 9101 4), and a ``jti`` not used before
(the ``replay`` cache, answered ``invalid_request_object``). Its claims become the authorization request's
parameters; nothing outside it is used (RFC 9101 5).

A ``private_key_jwt`` assertion (:class:`PrivateKeyJWT`) needs ``jti`` and ``exp`` (OpenID Connect Core 9), at most
:data:`MAX_ASSERTION_LIFETIME` ahead, and is accepted once (RFC 7523 3 item 7); anything else is ``invalid_client``
(RFC 7523 3.2).
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import InvalidClientError
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from bff.types import Clock
from bff_devtools.devidp.settings import ClientRegistration
from bff_devtools.replay import ReplayCache, ReplayRefused

#: RFC 9101 10.8.
REQUEST_OBJECT_TYP = "oauth-authz-req+jwt"
REQUEST_OBJECT_ALGS = ("PS256", "ES256", "RS256")
MAX_REQUEST_OBJECT = 16 * 1024
#: Longest ``exp - nbf`` of a request object.
MAX_LIFETIME = 3600
#: Longest ``exp - now`` of a client assertion: it is made for one request, so a few minutes are plenty, and a
#: captured one is useless soon after (RFC 7523 3 item 4 lets the server limit the window).
MAX_ASSERTION_LIFETIME = 300
#: The clock skew allowed on ``exp`` and ``nbf``.
LEEWAY = 30
#: Registered claims of the object that are not authorization parameters.
_JWT_CLAIMS = frozenset({"iss", "aud", "exp", "nbf", "iat", "jti", "sub"})


class InvalidRequestObject(Exception):
    """RFC 9101 6.3 ``invalid_request_object``; the message is the ``error_description``."""


def client_keys(registration: ClientRegistration) -> KeySet:
    if not registration.jwks:
        raise InvalidRequestObject("the client has no registered keys")
    try:
        return KeySet.import_key_set(dict(registration.jwks))  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise InvalidRequestObject("the client's registered keys are unusable") from exc


def request_object_replay_cache(capacity: int) -> ReplayCache:
    return ReplayCache("request object", max_lifetime=MAX_LIFETIME, skew=LEEWAY, capacity=capacity)


def verify_request_object(
    token: str, registration: ClientRegistration, *, issuer: str, now: float, replay: ReplayCache
) -> list[tuple[str, str]]:
    """The authorization parameters of a signed request object, or raises :class:`InvalidRequestObject`; its
    ``jti`` is then used up in ``replay``."""
    if len(token) > MAX_REQUEST_OBJECT or token.count(".") != 2:
        raise InvalidRequestObject("the request object is not a signed JWT of at most 16 KB")
    try:
        decoded = jwt.decode(token, client_keys(registration), algorithms=list(REQUEST_OBJECT_ALGS))
    except (JoseError, ValueError, TypeError) as exc:
        raise InvalidRequestObject("the request object's signature does not verify with the client's keys") from exc
    if decoded.header.get("typ") != REQUEST_OBJECT_TYP:
        raise InvalidRequestObject(f"the request object's typ is not {REQUEST_OBJECT_TYP}")
    claims: dict[str, Any] = decoded.claims
    client_id = registration.client_id
    if claims.get("iss") != client_id or claims.get("client_id") != client_id:
        raise InvalidRequestObject("the request object's iss and client_id must be the client")
    aud = claims.get("aud")
    if aud != issuer and not (isinstance(aud, list) and issuer in aud):
        raise InvalidRequestObject("the request object's aud is not this issuer")
    exp, nbf = _seconds(claims.get("exp")), _seconds(claims.get("nbf"))
    if exp is None or nbf is None:
        raise InvalidRequestObject("the request object needs exp and nbf")
    if exp <= now - LEEWAY or nbf > now + LEEWAY or exp - nbf > MAX_LIFETIME:
        raise InvalidRequestObject("the request object is expired, not yet valid, or valid for over an hour")
    if "request" in claims or "request_uri" in claims:
        raise InvalidRequestObject("a request object must not hold request or request_uri")
    params: list[tuple[str, str]] = []
    for name, value in claims.items():
        if name in _JWT_CLAIMS:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise InvalidRequestObject(f"the request object's {name[:40]!r} is not a string")
        params.append((name, str(value)))
    try:  # last: only an object that passed every other check uses up its jti
        replay.use(client_id, claims.get("jti"), exp, now=now)
    except ReplayRefused as exc:
        raise InvalidRequestObject(str(exc)) from exc
    return params


def _seconds(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class PrivateKeyJWT(JWTBearerClientAssertion):  # type: ignore[misc]  # authlib is untyped
    """``private_key_jwt`` (OpenID Connect Core 9): the assertion's audience may be the token endpoint, the issuer
    or the PAR endpoint (RFC 9126 2); each ``jti`` is accepted once while the assertion could be valid, and at most
    ``capacity`` are remembered at a time."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, issuer: str, *, clock: Clock, capacity: int) -> None:
        super().__init__(validate_jti=True, leeway=LEEWAY)
        self._audiences = [f"{issuer}/token", issuer, f"{issuer}/par"]
        self._clock = clock
        self._replay = ReplayCache(
            "client assertion", max_lifetime=MAX_ASSERTION_LIFETIME, skew=LEEWAY, capacity=capacity
        )

    def get_audiences(self) -> list[str]:
        return self._audiences

    def resolve_client_public_key(self, client: Any) -> KeySet:
        try:
            return client_keys(client.registration)
        except InvalidRequestObject:
            return KeySet([])

    def validate_jti(self, claims: Any, jti: Any) -> bool:
        """authlib's hook, called after the signature and ``iss``/``sub``/``aud``/``exp`` checks."""
        try:
            self._replay.use(str(claims.get("sub")), jti, claims.get("exp"), now=self._clock())
        except ReplayRefused as exc:
            # RFC 7523 3.2: a client assertion that is not valid is invalid_client.
            raise InvalidClientError(description=str(exc)) from exc
        return True
