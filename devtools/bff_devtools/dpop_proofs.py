"""How the reference IdP and the demo API check DPoP proofs (RFC 9449 4.3), and the nonces they hand out (8, 9).

A proof is verified with the public key in its own header: that is what DPoP means (the key the token is bound to,
``cnf.jkt``, is the thumbprint of that key). So everything about the header is hostile input:

- ``typ`` is ``dpop+jwt``; ``alg`` is on the allow-list (ES256, RS256 by default: never ``none`` or HMAC, RFC 8725
  3.1) and matches the key type; the ``jwk`` is a public key (no private member, RFC 9449 4.3 step 7);
- ``htm`` and ``htu`` match the request (``htu`` without query and fragment), ``iat`` is within ``window`` seconds
  of now, ``jti`` was not seen within that window (replay cache, 11.1), ``ath`` matches the access token when one
  is presented (4.3 step 12), ``nonce`` is one this server issued when nonces are demanded (8, 9).

Failures raise :class:`InvalidProof` (or :class:`UseNonce`) with a short description that never quotes the proof.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Collection
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key, RSAKey
from joserfc.jws import CompactSignature, JWSRegistry, extract_compact, validate_compact

from bff.types import Clock

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


class ProofVerifier:
    """Checks DPoP proofs for one server (see the module docstring); remembers ``jti`` values for ``window``."""

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
        self._seen: dict[str, float] = {}
        self._max_remembered = max_remembered

    def verify(self, proof: str, *, method: str, url: str, access_token: str | None = None) -> str:
        """The RFC 7638 thumbprint of the proof's key, or raises."""
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
        self._check_claims(claims, method, url, access_token)
        return key.thumbprint()

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

    def _check_claims(self, claims: dict[str, Any], method: str, url: str, access_token: str | None) -> None:
        jti, htm, htu, iat = claims.get("jti"), claims.get("htm"), claims.get("htu"), claims.get("iat")
        if not isinstance(jti, str) or not 0 < len(jti) <= 256:
            raise InvalidProof("the DPoP proof has no jti")
        if htm != method:
            raise InvalidProof("the DPoP proof's htm does not match the request")
        if not isinstance(htu, str) or htu_of(htu) != htu_of(url):
            raise InvalidProof("the DPoP proof's htu does not match the request")
        now = self._clock()
        if isinstance(iat, bool) or not isinstance(iat, int | float) or abs(now - iat) > self._window:
            raise InvalidProof("the DPoP proof's iat is outside the accepted window")
        if access_token is not None:
            ath = claims.get("ath")
            if not isinstance(ath, str) or not hmac.compare_digest(ath, access_token_hash(access_token)):
                raise InvalidProof("the DPoP proof's ath does not match the access token")
        elif "ath" in claims:
            raise InvalidProof("the DPoP proof has an ath but no access token was presented")
        if self.nonces is not None and not self.nonces.accepts(claims.get("nonce")):
            raise UseNonce("the DPoP proof lacks the server's current nonce")
        self._remember(jti, now)

    def _remember(self, jti: str, now: float) -> None:
        if len(self._seen) >= self._max_remembered:
            self._seen = {j: t for j, t in self._seen.items() if t > now}
            if len(self._seen) >= self._max_remembered:
                raise InvalidProof("too many DPoP proofs to remember; try again")
        expiry = self._seen.get(jti)
        if expiry is not None and expiry > now:
            raise InvalidProof("the DPoP proof's jti was used before")
        self._seen[jti] = now + 2 * self._window
