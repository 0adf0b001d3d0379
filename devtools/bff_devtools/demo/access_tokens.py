"""How the demo API (a resource server) checks the bearer tokens bff sends it: JWT access tokens (RFC 9068) signed
by the reference IdP, verified with the IdP's public keys only.

- Keys come from the ``jwks_uri`` of the IdP's discovery document, through bff's own ``JwksCache`` (cached,
  refetched once for an unknown ``kid`` and at most once per ``min_refetch_interval``, so made-up ``kid`` values
  cannot turn the API into a JWKS request amplifier). Key material in the token's header is never used.
- Algorithm allow-list (ES256, RS256 by default): ``none`` and HMAC can never verify (RFC 8725 3.1), and the key
  must be of the type the ``alg`` names (no RSA-public-key-as-HMAC-secret confusion, RFC 8725 2.1).
- RFC 9068 2.2 and 4: ``typ`` is ``at+jwt`` (so an ID token is not accepted as an access token), ``iss`` is the
  IdP, ``aud`` names this API, ``exp`` is in the future, ``iat``/``nbf`` are not, ``sub`` and ``jti`` are present.
- Revocation: a token whose ``jti`` is on the IdP's blocklist (``GET {issuer}/blocklist`` ->
  ``{"revoked_jtis": {jti: exp}}``) is refused. The list is fetched when a token is checked and the copy is older
  than ``interval`` (2 s), at most one fetch at a time (single flight: requests that have no usable copy wait for
  the fetch in progress, the others go on with the copy they have). If the IdP cannot be asked, the last copy is
  used for up to ``max_stale`` seconds and then every request fails with :class:`VerifierUnavailable`: revocation
  that silently stops working would be worse than a 503.

Failures raise :class:`InvalidToken` with a short description for ``WWW-Authenticate`` (never the token).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import Key
from joserfc.jws import CompactSignature, JWSRegistry, extract_compact, validate_compact

from bff.errors import IdPUnavailable, InvalidIdToken
from bff.oidc.jwks import JwksCache, TokenSource, key_type_for
from bff.types import Clock, JSONObject

logger = logging.getLogger(__name__)

#: RFC 9068 2.1: ``typ`` is ``at+jwt`` (``application/at+jwt`` is the same media type, RFC 7515 4.1.9).
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})


class InvalidToken(Exception):
    """The bearer token is not acceptable (RFC 6750 3.1 ``invalid_token``); ``description`` says why."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class VerifierUnavailable(Exception):
    """The IdP's keys or blocklist cannot be fetched and nothing usable is cached: answer 503."""


@dataclass(frozen=True, slots=True)
class AccessToken:
    """What the API may know about the caller. The token itself is not kept."""

    sub: str
    role: str | None
    scope: tuple[str, ...]
    expires_at: float
    issued_at: float | None
    jti: str
    client_id: str | None
    #: RFC 9449 6.1: the thumbprint of the DPoP key the token is bound to (``cnf.jkt``); None for a bearer token.
    jkt: str | None = None
    #: RFC 9068 2.2.1: the login's authentication context class and time, when the token carries them.
    acr: str | None = None
    auth_time: float | None = None


class Blocklist:
    """The IdP's revoked ``jti`` values, fetched at most once per ``interval`` (see the module docstring)."""

    def __init__(
        self, client: httpx.AsyncClient, url: str, *, clock: Clock, interval: float = 2.0, max_stale: float = 30.0
    ) -> None:
        self._client = client
        self._url = url
        self._clock = clock
        self._interval = interval
        self._max_stale = max_stale
        self._revoked: frozenset[str] = frozenset()
        self._checked_at: float | None = None
        self._loaded_at: float | None = None
        self._lock = asyncio.Lock()

    async def is_revoked(self, jti: str) -> bool:
        # Single flight: with a usable copy, a request goes on with it while another one fetches; without one, it
        # waits for the fetch in progress and uses its outcome rather than failing before it completes.
        if self._due() and (not self._lock.locked() or not self._usable()):
            async with self._lock:
                if self._due():
                    await self._fetch()
        if not self._usable():
            raise VerifierUnavailable("the identity provider's token blocklist cannot be fetched")
        return jti in self._revoked

    def _due(self) -> bool:
        return self._checked_at is None or self._clock() - self._checked_at >= self._interval

    def _usable(self) -> bool:
        return self._loaded_at is not None and self._clock() - self._loaded_at <= self._max_stale

    async def _fetch(self) -> None:
        """Marked as checked only once the fetch is over, so concurrent requests wait for it (see ``is_revoked``)."""
        started = self._clock()
        try:
            await self._load(started)
        finally:
            self._checked_at = started

    async def _load(self, started: float) -> None:
        try:
            response = await self._client.get(self._url, headers={"Accept": "application/json"})
            response.raise_for_status()
            revoked = json.loads(response.content)["revoked_jtis"]
            if not isinstance(revoked, dict):
                raise TypeError("revoked_jtis is not an object")  # noqa: TRY301 - handled below with the rest
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            logger.warning("blocklist %s: cannot fetch (%s); keeping the last copy", self._url, type(exc).__name__)
            return
        self._revoked = frozenset(str(jti) for jti in revoked)
        self._loaded_at = started


class KeySource(Protocol):
    async def get_key(self, kid: str | None, alg: str) -> Key: ...


class DiscoveredJwks:
    """bff's :class:`JwksCache` on the ``jwks_uri`` of the IdP's discovery document (RFC 8414), which is read on
    first use: the API may start before the IdP answers."""

    def __init__(self, client: httpx.AsyncClient, issuer: str, *, clock: Clock, min_refetch_interval: float) -> None:
        self._client = client
        self._issuer = issuer.rstrip("/")
        self._clock = clock
        self._min_refetch_interval = min_refetch_interval
        self._cache: JwksCache | None = None
        self._lock = asyncio.Lock()

    async def get_key(self, kid: str | None, alg: str) -> Key:
        if self._cache is None:
            async with self._lock:
                if self._cache is None:
                    self._cache = JwksCache(
                        self._client,
                        await self._discover_jwks_uri(),
                        clock=self._clock,
                        min_refetch_interval=self._min_refetch_interval,
                    )
        # A bearer token presented to the API arrives from outside: unknown kids refetch only within the rate limit.
        return await self._cache.get_key(kid, alg, source=TokenSource.UNSOLICITED)

    async def _discover_jwks_uri(self) -> str:
        url = self._issuer + "/.well-known/openid-configuration"
        try:
            response = await self._client.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            metadata = json.loads(response.content)
        except (httpx.HTTPError, ValueError) as exc:
            raise VerifierUnavailable(f"the identity provider's discovery document cannot be fetched ({url})") from exc
        jwks_uri = metadata.get("jwks_uri") if isinstance(metadata, dict) else None
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise VerifierUnavailable("the identity provider's discovery document has no jwks_uri")
        return jwks_uri


def _number(claims: JSONObject, name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise InvalidToken(f"the token has no {name}")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidToken(f"the token's {name} is not a number")
    return float(value)


class AccessTokenVerifier:
    """Checks bearer tokens for one audience (see the module docstring)."""

    def __init__(
        self,
        jwks: KeySource,
        blocklist: Blocklist,
        *,
        issuer: str,
        audience: str,
        clock: Clock,
        algorithms: Collection[str] = ("ES256", "RS256"),
        leeway: float = 5.0,
    ) -> None:
        self._jwks = jwks
        self._blocklist = blocklist
        self._issuer = issuer
        self._audience = audience
        self._clock = clock
        # Only asymmetric algorithms count, whatever the caller configured.
        self._algorithms = [alg for alg in algorithms if key_type_for(alg) is not None]
        if not self._algorithms:
            raise ValueError("no asymmetric algorithm allowed")
        self._registry = JWSRegistry(algorithms=self._algorithms, strict_check_header=False)
        self._leeway = leeway

    async def verify(self, token: str) -> AccessToken:
        header, claims = await self._verify_signature(token)
        typ: Any = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in ACCESS_TOKEN_TYPES:
            raise InvalidToken("the token is not an access token (typ must be at+jwt)")
        if claims.get("iss") != self._issuer:
            raise InvalidToken("the token was issued by another issuer")
        aud: Any = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or self._audience not in audiences:
            raise InvalidToken("the token is not meant for this API (aud)")
        now = self._clock()
        exp = _number(claims, "exp", required=True)
        assert exp is not None
        if now >= exp + self._leeway:
            raise InvalidToken("the token has expired")
        iat = _number(claims, "iat", required=False)
        if iat is not None and iat > now + self._leeway:
            raise InvalidToken("the token was issued in the future (iat)")
        nbf = _number(claims, "nbf", required=False)
        if nbf is not None and nbf > now + self._leeway:
            raise InvalidToken("the token is not valid yet (nbf)")
        sub, jti = claims.get("sub"), claims.get("jti")
        if not isinstance(sub, str) or not sub:
            raise InvalidToken("the token has no sub")
        if not isinstance(jti, str) or not jti:
            raise InvalidToken("the token has no jti")
        if await self._blocklist.is_revoked(jti):
            raise InvalidToken("the token has been revoked")
        role, scope, client_id = claims.get("role"), claims.get("scope"), claims.get("client_id")
        cnf: Any = claims.get("cnf")
        jkt: Any = cnf.get("jkt") if isinstance(cnf, dict) else None
        if cnf is not None and (not isinstance(jkt, str) or not jkt):
            raise InvalidToken("the token's cnf is not a DPoP key thumbprint")
        acr = claims.get("acr")
        return AccessToken(
            acr=acr if isinstance(acr, str) else None,
            auth_time=_number(claims, "auth_time", required=False),
            jkt=jkt,
            sub=sub,
            role=role if isinstance(role, str) else None,
            scope=tuple(scope.split()) if isinstance(scope, str) else (),
            expires_at=exp,
            issued_at=iat,
            jti=jti,
            client_id=client_id if isinstance(client_id, str) else None,
        )

    async def _verify_signature(self, token: str) -> tuple[JSONObject, JSONObject]:
        if token.count(".") != 2:
            raise InvalidToken("the token is not a signed JWT")
        try:
            obj: CompactSignature = extract_compact(token.encode("ascii"), registry=self._registry)
        except (JoseError, ValueError) as exc:
            raise InvalidToken("the token is malformed") from exc
        header: JSONObject = dict(obj.headers())
        alg: Any = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise InvalidToken("the token's signing algorithm is not allowed")
        kid: Any = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("the token is malformed")
        try:
            key = await self._jwks.get_key(kid, alg)
        except InvalidIdToken as exc:  # bff's JwksCache speaks of ID tokens; the reasons are the same
            raise InvalidToken(exc.message) from exc
        except IdPUnavailable as exc:
            raise VerifierUnavailable(exc.message) from exc
        try:
            valid = validate_compact(obj, key, registry=self._registry)
        except JoseError as exc:
            raise InvalidToken("the token's signature is invalid") from exc
        if not valid:
            raise InvalidToken("the token's signature is invalid")
        try:
            claims = json.loads(obj.payload)
        except ValueError as exc:
            raise InvalidToken("the token is malformed") from exc
        if not isinstance(claims, dict):
            raise InvalidToken("the token is malformed")
        return header, claims
