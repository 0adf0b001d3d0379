"""Validation of ID tokens (OpenID Connect Core 1.0 section 3.1.3.7) and logout tokens (Back-Channel Logout 1.0
section 2.6), with joserfc doing the JOSE work.

Both share one signature check: the header ``alg`` must be on the configured allow-list and asymmetric ("none" and
HMAC are refused even if configured, RFC 8725 3.1 and 2.1), the key comes from the JWKS by ``kid`` and must be of
the type the ``alg`` names (so an RSA public key can never be used as an HMAC secret, RFC 8725 2.1), and key
material in the token's own header (``jwk``, ``jku``, ``x5u``, ``x5c``) is never used (RFC 8725 3.10). The caller
says where the token came from (:class:`~bff.oidc.jwks.TokenSource`): only a token from the token endpoint may make the
JWKS cache refetch whenever it names an unknown ``kid``; a token posted to a public endpoint is held to a rate limit.

Audiences (Core 3.1.3.7 step 3, Back-Channel Logout 2.6 step 3): ``aud`` must contain the client and may contain
nothing else unless the operator listed it in ``trusted_audiences``; a token also meant for a party the client does
not trust is refused, whatever ``azp`` says. An ID token from the token endpoint that carries ``at_hash`` must bind
the access token of the same answer (Core 3.1.3.8 and 3.2.2.9); a missing ``at_hash`` is allowed (Core 3.1.3.6).

Every failure raises :class:`~bff.errors.InvalidIdToken` or :class:`~bff.errors.InvalidLogoutToken` with a short
operator-facing message that names the check ("id_token issuer mismatch") and never contains the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Collection
from typing import Any, Literal

from joserfc.errors import JoseError
from joserfc.jwk import Key, OKPKey
from joserfc.jws import CompactSignature, JWSRegistry, extract_compact, validate_compact

from bff.errors import InvalidIdToken, InvalidLogoutToken, NonceMismatch
from bff.oidc.jwks import JwksCache, TokenSource, key_type_for
from bff.types import Clock, JSONObject

logger = logging.getLogger(__name__)

BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
#: RFC 8725 3.11 explicit typing: tokens of these types are never accepted as an ID token.
_NOT_ID_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt", "logout+jwt", "application/logout+jwt"})
#: Back-Channel Logout 1.0 section 2.4 recommends ``typ: logout+jwt``; older IdPs send ``JWT`` or nothing.
_LOGOUT_TOKEN_TYPES = frozenset({"jwt", "logout+jwt", "application/logout+jwt"})
#: joserfc's default 512-byte header limit is too small for IdPs that put an ``x5c`` chain in the header.
_MAX_HEADER_BYTES = 8192

#: RS*, PS* and ES* name their SHA-2 hash by its size (RFC 7518 3.1).
_SHA_BY_SIZE = {"256": "sha256", "384": "sha384", "512": "sha512"}

_Kind = Literal["id_token", "logout_token"]
_Error = type[InvalidIdToken] | type[InvalidLogoutToken]


async def verify_signature(
    token: str, *, jwks: JwksCache, algorithms: Collection[str], kind: _Kind, error: _Error, source: TokenSource
) -> tuple[JSONObject, JSONObject, Key]:
    """Check the JWS signature of ``token`` with a key from ``jwks``; return its header, claims and the key."""
    if not isinstance(token, str) or token.count(".") != 2:
        if isinstance(token, str) and token.count(".") == 4:
            raise error(f"{kind} is encrypted (JWE is not supported)")
        raise error(f"{kind} is malformed")
    # Only asymmetric algorithms count, whatever the configuration says.
    allowed = [alg for alg in algorithms if key_type_for(alg) is not None]
    if not allowed:  # an empty allow-list would make joserfc fall back to its own defaults
        raise error(f"{kind} cannot be verified: no asymmetric algorithm is configured")
    registry = JWSRegistry(algorithms=allowed, strict_check_header=False)
    registry.max_header_length = _MAX_HEADER_BYTES
    try:
        obj: CompactSignature = extract_compact(token.encode("ascii"), registry=registry)
    except (JoseError, ValueError) as exc:
        raise error(f"{kind} is malformed") from exc
    header: JSONObject = dict(obj.headers())
    alg: Any = header.get("alg")
    if not isinstance(alg, str) or key_type_for(alg) is None:
        shown = repr(alg[:16]) if isinstance(alg, str) else type(alg).__name__
        raise error(f"{kind} alg {shown} is refused (only asymmetric signatures are accepted)")
    if alg not in allowed:
        raise error(f"{kind} alg {alg!r} is not allowed")
    kid: Any = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise error(f"{kind} is malformed")
    try:
        key = await jwks.get_key(kid, alg, source=source)
    except InvalidIdToken as exc:
        if error is InvalidIdToken:
            raise
        raise error(f"{kind}: {exc.message}") from exc
    try:
        valid = validate_compact(obj, key, registry=registry)
    except JoseError as exc:  # the key refuses the algorithm (use, alg or curve), or a bad crit header
        raise error(f"{kind} signature is invalid") from exc
    if not valid:
        raise error(f"{kind} signature is invalid")
    try:
        claims = json.loads(obj.payload)
    except ValueError as exc:
        raise error(f"{kind} is malformed") from exc
    if not isinstance(claims, dict):
        raise error(f"{kind} is malformed")
    return header, claims, key


def _time(claims: JSONObject, name: str, *, kind: _Kind, error: _Error, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise error(f"{kind} {name} missing")
        return None
    # RFC 7519 2 NumericDate: a JSON number; bool is an int in Python and never a date.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error(f"{kind} {name} is not a number")
    return float(value)


def _check_common(
    claims: JSONObject,
    *,
    issuer: str,
    client_id: str,
    trusted_audiences: Collection[str],
    now: float,
    leeway: float,
    kind: _Kind,
    error: _Error,
    require_exp: bool,
) -> list[str]:
    """``iss``, ``aud``, ``exp``, ``iat``, ``nbf`` (Core 3.1.3.7 steps 2, 3, 9, 10); returns the audiences."""
    if claims.get("iss") != issuer:
        raise error(f"{kind} issuer mismatch")
    aud: Any = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise error(f"{kind} aud missing or malformed")
    if client_id not in audiences:
        raise error(f"{kind} audience mismatch")
    # Core 3.1.3.7 step 3: refuse a token that also names an audience the client does not trust, even with azp.
    untrusted = [a for a in audiences if a != client_id and a not in trusted_audiences]
    if untrusted:
        # The IdP signed it, so naming it helps the operator decide; the browser's message stays generic.
        logger.warning("%s names audience %r, which is not in oidc.trusted_audiences", kind, untrusted[0][:200])
        raise error(f"{kind} aud lists an audience the client does not trust")
    exp = _time(claims, "exp", kind=kind, error=error, required=require_exp)
    if exp is not None and now >= exp + leeway:
        raise error(f"{kind} expired")
    iat = _time(claims, "iat", kind=kind, error=error, required=True)
    if iat is not None and iat > now + leeway:
        raise error(f"{kind} iat is in the future")
    nbf = _time(claims, "nbf", kind=kind, error=error, required=False)
    if nbf is not None and nbf > now + leeway:
        raise error(f"{kind} not yet valid (nbf)")
    return audiences


async def validate_id_token(
    token: str,
    *,
    jwks: JwksCache,
    issuer: str,
    client_id: str,
    nonce: str | None,
    access_token: str | None,
    algorithms: Collection[str],
    clock: Clock,
    leeway: float,
    source: TokenSource,
    trusted_audiences: Collection[str] = (),
) -> JSONObject:
    """Validate an ID token per OpenID Connect Core 3.1.3.7 and return its claims.

    ``nonce`` is the value sent in the authorization request; pass None only for an ID token from a refresh (Core
    12.2), which need not carry one. ``access_token`` is the one the same token answer carried: an ``at_hash`` claim
    must bind it (pass None only when there is none). Raises :class:`~bff.errors.InvalidIdToken` (and
    :class:`~bff.errors.IdPUnavailable` when the JWKS cannot be fetched).
    """
    header, claims, key = await verify_signature(
        token, jwks=jwks, algorithms=algorithms, kind="id_token", error=InvalidIdToken, source=source
    )
    typ = header.get("typ")
    if isinstance(typ, str) and typ.lower() in _NOT_ID_TOKEN_TYPES:
        raise InvalidIdToken("id_token typ is not an ID token")
    audiences = _check_common(
        claims,
        issuer=issuer,
        client_id=client_id,
        trusted_audiences=trusted_audiences,
        now=clock(),
        leeway=leeway,
        kind="id_token",
        error=InvalidIdToken,
        require_exp=True,
    )
    azp = claims.get("azp")
    if len(audiences) > 1 and azp is None:
        # Core 3.1.3.7 steps 4-5 (and Core 2: azp is needed when the ID token has several audiences).
        raise InvalidIdToken("id_token azp missing with multiple audiences")
    if azp is not None and azp != client_id:
        raise InvalidIdToken("id_token azp mismatch")
    if nonce is not None:
        # Core 3.1.3.7 step 11; constant time so the comparison leaks nothing about the expected value.
        claimed = claims.get("nonce")
        if not isinstance(claimed, str):
            raise NonceMismatch("id_token nonce missing")
        if not hmac.compare_digest(claimed.encode(), nonce.encode()):
            raise NonceMismatch("id_token nonce mismatch")
    sub = claims.get("sub")
    # Core 2: sub is a case-sensitive string of at most 255 ASCII characters.
    if not isinstance(sub, str) or not sub:
        raise InvalidIdToken("id_token sub missing")
    if len(sub) > 255 or not sub.isascii():
        raise InvalidIdToken("id_token sub is not a valid subject identifier")
    _check_at_hash(claims, access_token, alg=str(header["alg"]), key=key)
    return claims


def _check_at_hash(claims: JSONObject, access_token: str | None, *, alg: str, key: Key) -> None:
    """Core 3.1.3.8 / 3.2.2.9: ``at_hash`` is the base64url left half of the hash of the ASCII access token."""
    at_hash = claims.get("at_hash")
    if at_hash is None:
        return  # Core 3.1.3.6: optional in the code flow
    if not isinstance(at_hash, str):
        raise InvalidIdToken("id_token at_hash is not a string")
    if access_token is None:
        raise InvalidIdToken("id_token has an at_hash but the token answer has no access token")
    if not access_token.isascii():  # RFC 6749 A.12: an access token is VSCHARs; Core hashes its ASCII octets
        raise InvalidIdToken("id_token at_hash cannot bind a non-ASCII access token")
    expected = _half_hash(access_token.encode("ascii"), alg, key)
    if not hmac.compare_digest(at_hash.encode(), expected.encode()):
        raise InvalidIdToken("id_token at_hash does not match the access token")


def _half_hash(value: bytes, alg: str, key: Key) -> str:
    """The hash of the JWS ``alg`` (RFC 7518 3.1); for EdDSA the curve decides (Ed25519: SHA-512, Ed448: SHAKE256
    with 114 bytes of output, as OpenID Connect Token Hash Algorithms 1.0 records)."""
    if alg == "EdDSA":
        if isinstance(key, OKPKey) and key.curve_name == "Ed448":
            digest = hashlib.shake_256(value).digest(114)
        else:
            digest = hashlib.sha512(value).digest()
    else:
        name = _SHA_BY_SIZE.get(alg[2:])
        if name is None:  # unreachable with the configurable algs; fail closed rather than guess a hash
            raise InvalidIdToken(f"id_token at_hash cannot be checked for alg {alg[:16]!r}")
        digest = hashlib.new(name, value).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode("ascii")


async def validate_logout_token(
    token: str,
    *,
    jwks: JwksCache,
    issuer: str,
    client_id: str,
    algorithms: Collection[str],
    clock: Clock,
    leeway: float,
    max_age: float = 300.0,
    trusted_audiences: Collection[str] = (),
) -> JSONObject:
    """Validate a logout token per OpenID Connect Back-Channel Logout 1.0 section 2.6 and return its claims.

    A token without ``exp`` is refused once its ``iat`` is older than ``max_age`` (plus leeway), which bounds how
    long the caller must remember ``jti`` values to refuse replays (section 2.6 step 7, the caller's job).
    A logout token arrives at a public endpoint, so an unknown ``kid`` in it refetches the JWKS only within the
    cache's rate limit (:attr:`~bff.oidc.jwks.TokenSource.UNSOLICITED`). Raises
    :class:`~bff.errors.InvalidLogoutToken` (and :class:`~bff.errors.IdPUnavailable` for the JWKS).
    """
    header, claims, _ = await verify_signature(
        token, jwks=jwks, algorithms=algorithms, kind="logout_token", error=InvalidLogoutToken,
        source=TokenSource.UNSOLICITED,
    )  # fmt: skip
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in _LOGOUT_TOKEN_TYPES):
        raise InvalidLogoutToken("logout_token typ is not logout+jwt")
    now = clock()
    _check_common(
        claims,
        issuer=issuer,
        client_id=client_id,
        trusted_audiences=trusted_audiences,
        now=now,
        leeway=leeway,
        kind="logout_token",
        error=InvalidLogoutToken,
        require_exp=False,
    )
    if claims.get("exp") is None and float(claims["iat"]) < now - max_age - leeway:
        raise InvalidLogoutToken("logout_token is too old")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise InvalidLogoutToken("logout_token jti missing")
    events = claims.get("events")
    if not isinstance(events, dict):
        raise InvalidLogoutToken("logout_token events missing or not a JSON object")
    # Section 2.4: the member's value MUST be a JSON object (usually empty).
    if not isinstance(events.get(BACKCHANNEL_LOGOUT_EVENT), dict):
        raise InvalidLogoutToken("logout_token events lacks the back-channel logout event")
    sid, sub = claims.get("sid"), claims.get("sub")
    if sid is None and sub is None:
        raise InvalidLogoutToken("logout_token has neither sid nor sub")
    if any(value is not None and (not isinstance(value, str) or not value) for value in (sid, sub)):
        raise InvalidLogoutToken("logout_token sid or sub is not a string")
    # Section 2.6 step 6: a nonce means this is an ID token being passed off as a logout token.
    if "nonce" in claims:
        raise InvalidLogoutToken("logout_token contains a nonce")
    return claims
