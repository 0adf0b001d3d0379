"""DPoP (RFC 9449): bff's proof-of-possession key, the proofs it signs, and the nonces servers hand it.

One key per bff deployment, read from ``[oidc] dpop_key_file`` (an EC P-256 private key in PEM): every instance
signs with it, so a token bound to it (``cnf.jkt``, RFC 9449 6.1) works whichever instance sends it, and the key
never enters the session store. The trade-offs against a key per session are in docs/dpop.md.

A proof (RFC 9449 4.2) is a JWT with header ``typ: dpop+jwt``, ``alg: ES256`` and the public ``jwk``, and claims
``jti`` (fresh per proof), ``htm``, ``htu`` (the target URI without query and fragment, 4.3 step 9), ``iat``,
``ath`` (base64url SHA-256 of the access token, only toward a resource server, 4.2) and ``nonce`` when a server
demanded one (8, 9). Signed with joserfc; nothing here builds a JWS by hand.

Nonces arrive in ``DPoP-Nonce`` response headers from the token endpoint and from upstreams. They are hostile
input: only values of the RFC 9449 8.1 grammar (``1*NQCHAR``) of bounded length are kept, the latest per origin.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from bff.errors import ConfigError
from bff.types import Clock

#: RFC 9449 4.2: the ``typ`` of a DPoP proof.
PROOF_TYP = "dpop+jwt"
ALG = "ES256"
#: RFC 9449 8.1: ``nonce = 1*NQCHAR``, NQCHAR = %x21 / %x23-5B / %x5D-7E; bounded so a server cannot grow proofs.
_NONCE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,256}")
#: Origins whose nonce is remembered: the IdP and the configured upstreams, so a small bound is plenty.
MAX_ORIGINS = 1024


def access_token_hash(access_token: str) -> str:
    """RFC 9449 4.2 ``ath``: base64url (no padding) of the SHA-256 of the token's ASCII octets."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def htu_of(url: str) -> str:
    """RFC 9449 4.2 ``htu``: the request URI without query and fragment."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def valid_nonce(value: str | bytes | None) -> str | None:
    """The nonce if it is one by RFC 9449 8.1's grammar, else None (never stored, never sent)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    value = value.strip(" \t")  # a field value excludes its optional whitespace (RFC 9110 5.5)
    return value if _NONCE.fullmatch(value) else None


def load_dpop_key(path: str) -> ECKey:
    """The EC P-256 private key of ``[oidc] dpop_key_file``."""
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([f"oidc.dpop_key_file: cannot read the file ({exc.strerror or type(exc).__name__})"]) from exc
    try:
        key = ECKey.import_key(pem)
    except (JoseError, ValueError, TypeError) as exc:
        raise ConfigError(["oidc.dpop_key_file: is not a PEM EC private key"]) from exc
    if not key.is_private or key.curve_name != "P-256":
        raise ConfigError(["oidc.dpop_key_file: must be an EC P-256 private key (ES256, RFC 7518 3.4)"])
    return key


class DPoPProver:
    """Signs DPoP proofs with one key and remembers the latest nonce of each origin."""

    def __init__(self, key: ECKey, *, clock: Clock) -> None:
        self._key = key
        self._clock = clock
        self._header = {"typ": PROOF_TYP, "alg": ALG, "jwk": key.as_dict(private=False)}
        self._nonces: dict[str, str] = {}
        #: RFC 7638 thumbprint of the public key: what ``cnf.jkt`` of a bound token names (RFC 9449 6.1).
        self.jkt = key.thumbprint()

    def proof(self, method: str, url: str, *, access_token: str | None = None, nonce: str | None = None) -> str:
        """A fresh proof for one request to ``url``; the origin's remembered nonce unless ``nonce`` is given."""
        claims: dict[str, str | int] = {
            "jti": secrets.token_urlsafe(16),
            "htm": method,
            "htu": htu_of(url),
            "iat": int(self._clock()),
        }
        if access_token is not None:
            claims["ath"] = access_token_hash(access_token)
        nonce = nonce if nonce is not None else self._nonces.get(origin_of(url))
        if nonce is not None:
            claims["nonce"] = nonce
        payload = json.dumps(claims, separators=(",", ":"))
        return jws.serialize_compact(self._header, payload, self._key, algorithms=[ALG])

    def nonce_demanded(self, url: str, status: int, body: bytes, nonce: str | None) -> bool:
        """True for a 400 ``use_dpop_nonce`` answer from ``url`` carrying a valid ``DPoP-Nonce``, now remembered:
        the caller replays its request once, with a fresh proof (RFC 9449 8)."""
        if status != 400:
            return False
        try:
            data = json.loads(body)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError
            return False
        if not isinstance(data, dict) or data.get("error") != "use_dpop_nonce":
            return False
        return self.remember_nonce(url, nonce) is not None

    def nonce_for(self, url: str) -> str | None:
        return self._nonces.get(origin_of(url))

    def remember_nonce(self, url: str, value: str | bytes | None) -> str | None:
        """Keep a server's ``DPoP-Nonce`` for its origin if it is valid; returns what was kept (or None)."""
        nonce = valid_nonce(value)
        if nonce is None:
            return None
        origin = origin_of(url)
        if origin not in self._nonces and len(self._nonces) >= MAX_ORIGINS:
            self._nonces.pop(next(iter(self._nonces)))
        self._nonces[origin] = nonce
        return nonce
