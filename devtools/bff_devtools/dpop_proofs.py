"""How the reference IdP and the demo API check DPoP proofs (RFC 9449 4.3), and the nonces they hand out (8, 9).

A proof is verified with the public key in its own header: that is what DPoP means (the key the token is bound to,
``cnf.jkt``, is the thumbprint of that key). So everything about the header is hostile input:

- ``typ`` is ``dpop+jwt``; ``alg`` is on the allow-list (ES256, RS256 by default: never ``none`` or HMAC, RFC 8725
  3.1) and matches the key type; the ``jwk`` is a public key (no private member, RFC 9449 4.3 step 7);
- ``htm`` and ``htu`` match the request (``htu`` without query and fragment), ``iat`` is a finite number at most
  ``window`` seconds ahead of now and less than ``window`` seconds behind it, ``ath`` matches the access token when
  one is presented (4.3 step 12), ``nonce`` is one this server issued when nonces are demanded (8, 9);
- ``jti`` was not used before by the same key while the proof can be accepted, that is until ``window`` seconds
  after its ``iat`` (11.1). The memory is a bounded :class:`~bff_devtools.replay.ReplayCache`: when it is full of
  live proofs a new one is refused (the server is busy) rather than a live ``jti`` forgotten.

Failures raise :class:`InvalidProof` (or :class:`UseNonce`) with a short description that never quotes the proof.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key, RSAKey
from joserfc.jws import CompactSignature, JWSRegistry, extract_compact, validate_compact

from bff.types import Clock
from bff_devtools.replay import MAX_JTI, ReplayCache, ReplayRefused

PROOF_TYP = "dpop+jwt"
_KEY_TYPES: dict[str, type[ECKey] | type[RSAKey]] = {"ES256": ECKey, "RS256": RSAKey}
#: Members of a private JWK (RFC 7518 6.2.2, 6.3.2) and of a symmetric one (6.4): never in a proof's header.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
MAX_PROOF = 8 * 1024


class InvalidProof(Exception):
    """The proof is not acceptable (RFC 9449 7.1 ``invalid_dpop_proof``); ``description`` says why."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class UseNonce(InvalidProof):
    """The proof lacks the server's current nonce (RFC 9449 8 and 9 ``use_dpop_nonce``)."""


def access_token_hash(access_token: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(access_token.encode("ascii")).digest()).rstrip(b"=").decode()


def htu_of(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, "", ""))


def _seconds(value: object) -> float:
    """A JSON number as a float; NaN for anything else (a boolean, a string, an integer too large for a float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    try:
        return float(value)
    except OverflowError:  # an integer beyond float: json.loads reads a few hundred digits
        return math.nan


class Nonces:
    """Server nonces: the current one and the one before it are accepted; a new one every ``lifetime`` seconds."""

    def __init__(self, *, clock: Clock, lifetime: float = 300.0) -> None:
        self._clock = clock
        self._lifetime = lifetime
        self._current = secrets.token_urlsafe(16)
        self._previous: str | None = None
        self._since = clock()

    def current(self) -> str:
        if self._clock() - self._since >= self._lifetime:
            self._previous, self._current, self._since = self._current, secrets.token_urlsafe(16), self._clock()
        return self._current

    def accepts(self, nonce: Any) -> bool:
        if not isinstance(nonce, str):
            return False
        current = self.current()
        return hmac.compare_digest(nonce, current) or (
            self._previous is not None and hmac.compare_digest(nonce, self._previous)
        )


@dataclass(frozen=True)
class UsedProof:
    """A proof that passed: its key's RFC 7638 thumbprint and the ``jti`` it used up."""

    jkt: str
    jti: str


class ProofVerifier:
    """Checks DPoP proofs for one server (see the module docstring); remembers at most ``max_remembered`` live
    ``jti`` values."""

    def __init__(
        self,
        *,
        clock: Clock,
        algorithms: Collection[str] = ("ES256", "RS256"),
        window: float = 60.0,
        nonces: Nonces | None = None,
        max_remembered: int = 100_000,
    ) -> None:
        self._clock = clock
        self._algorithms = [alg for alg in algorithms if alg in _KEY_TYPES]
        if not self._algorithms:
            raise ValueError("no asymmetric algorithm allowed")
        self._registry = JWSRegistry(algorithms=self._algorithms, strict_check_header=False)
        # The header carries the public key: an RSA key (RS256) does not fit joserfc's 512-byte default.
        self._registry.max_header_length = 2048
        self._window = window
        self.nonces = nonces
        # An entry lives at most two windows: a proof may be made a window ahead of this server's clock.
        self._used = ReplayCache("DPoP proof", max_lifetime=math.ceil(2 * window), skew=0, capacity=max_remembered)

    def verify(self, proof: str, *, method: str, url: str, access_token: str | None = None) -> str:
        """The RFC 7638 thumbprint of the proof's key, or raises."""
        return self.use(proof, method=method, url=url, access_token=access_token).jkt

    def release(self, used: UsedProof) -> None:
        """The request ``used`` came with was refused before the proof served (its client failed to authenticate):
        its ``jti`` holds no room in the memory (a flood from someone who cannot authenticate fills nothing)."""
        self._used.release(used.jkt, used.jti)

    def use(self, proof: str, *, method: str, url: str, access_token: str | None = None) -> UsedProof:
        """``verify``, with the ``jti`` it used up (for ``release``)."""
        if len(proof) > MAX_PROOF or proof.count(".") != 2:
            raise InvalidProof("the DPoP proof is not a signed JWT")
        try:
            obj: CompactSignature = extract_compact(proof.encode("ascii"), registry=self._registry)
        except (JoseError, ValueError, UnicodeError) as exc:
            raise InvalidProof("the DPoP proof is malformed") from exc
        header = dict(obj.headers())
        key = self._header_key(header)
        try:
            valid = validate_compact(obj, key, registry=self._registry)
        except JoseError as exc:
            raise InvalidProof("the DPoP proof's signature is invalid") from exc
        if not valid:
            raise InvalidProof("the DPoP proof's signature is invalid")
        try:
            claims = json.loads(obj.payload)
        except ValueError as exc:
            raise InvalidProof("the DPoP proof is malformed") from exc
        if not isinstance(claims, dict):
            raise InvalidProof("the DPoP proof is malformed")
        thumbprint = key.thumbprint()
        return UsedProof(thumbprint, self._check_claims(claims, thumbprint, method, url, access_token))

    def _header_key(self, header: dict[str, Any]) -> Key:
        if header.get("typ") != PROOF_TYP:
            raise InvalidProof("the DPoP proof's typ is not dpop+jwt")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise InvalidProof("the DPoP proof's algorithm is not allowed")
        jwk = header.get("jwk")
        if not isinstance(jwk, dict) or _PRIVATE_MEMBERS & jwk.keys():
            raise InvalidProof("the DPoP proof's jwk is not a public key")
        try:
            key = _KEY_TYPES[alg].import_key(jwk)
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise InvalidProof("the DPoP proof's jwk does not fit its algorithm") from exc
        if key.is_private:
            raise InvalidProof("the DPoP proof's jwk is not a public key")
        return key

    def _check_claims(
        self, claims: dict[str, Any], thumbprint: str, method: str, url: str, access_token: str | None
    ) -> str:
        """The proof's ``jti``, used up, once every claim holds."""
        jti, htm, htu, iat = claims.get("jti"), claims.get("htm"), claims.get("htu"), claims.get("iat")
        if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI:
            raise InvalidProof("the DPoP proof has no jti")
        if htm != method:
            raise InvalidProof("the DPoP proof's htm does not match the request")
        if not isinstance(htu, str) or htu_of(htu) != htu_of(url):
            raise InvalidProof("the DPoP proof's htu does not match the request")
        now, issued = self._clock(), _seconds(iat)
        # RFC 9449 11.1: accepted from a window before iat (clock skew) until a window after it, not from then on
        # (as a JWT is not from its exp, RFC 7519 4.1.4); the jti is remembered exactly that long.
        until = issued + self._window
        if not issued - now <= self._window or until <= now:  # "not <=": NaN (json.loads reads it) is refused
            raise InvalidProof("the DPoP proof's iat is outside the accepted window")
        if access_token is not None:
            ath = claims.get("ath")
            if not isinstance(ath, str) or not hmac.compare_digest(ath, access_token_hash(access_token)):
                raise InvalidProof("the DPoP proof's ath does not match the access token")
        elif "ath" in claims:
            raise InvalidProof("the DPoP proof has an ath but no access token was presented")
        if self.nonces is not None and not self.nonces.accepts(claims.get("nonce")):
            raise UseNonce("the DPoP proof lacks the server's current nonce")
        try:  # last: only a proof that passed every other check uses up its jti
            # RFC 7519 4.1.7: a jti is unique per issuer, here the key that signed the proof.
            self._used.remember(thumbprint, jti, until, now=now)
        except ReplayRefused as exc:
            raise InvalidProof(str(exc)) from exc
        return jti
