"""The IdP's signing keys, fetched from its ``jwks_uri`` and cached.

Keys come from the JWKS URI of the discovery document and from nowhere else: a ``jwk``, ``jku``, ``x5u`` or ``x5c``
header in a token is never looked at (RFC 8725 3.10; accepting them lets the token choose the key that verifies it).
Only public asymmetric signing keys are kept (RFC 8725 3.1): ``oct`` keys, encryption keys and keys joserfc cannot
read are skipped one by one (RFC 7517 5: "implementations SHOULD ignore JWKs ... that use kty values that are not
understood by them, that are missing required members").

When a token names a ``kid`` the cache does not know, the IdP has probably rotated its keys (OpenID Connect Core
10.1.1) and the set is fetched again. How often depends on where the token came from, which the caller states
(:class:`TokenSource`), never guessed:

- ``TOKEN_ENDPOINT``: the answer to bff's own authenticated request to the IdP over TLS. Such a token is as
  authentic as the JWKS itself, so every unknown ``kid`` gets a refetch; concurrent callers share one fetch
  (single-flight), and a caller only settles for a fetch that started after it saw the unknown ``kid``, so a
  rotation is always picked up by the first login that needs it;
- ``UNSOLICITED``: posted to a public endpoint (back-channel logout) by anyone. Its refetches are rate-limited to
  one per ``min_refetch_interval`` seconds (by the injected clock), so a stream of tokens with made-up ``kid``
  values can neither turn bff into a JWKS request amplifier nor, since the budget is theirs alone, stop a real
  rotation from reaching logins.

The set is also fetched again after ``max_age``, so a key the IdP withdrew (compromised, retired) stops being trusted.

Every fetch started counts once in ``bff_jwks_fetch_total{trigger}``: ``startup`` (the first), ``unknown_kid``,
``expired`` (past ``max_age``), whether it succeeds or not.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Any, Literal, get_args

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key, KeySet, OKPKey, import_key

from bff.errors import IdPUnavailable, InvalidIdToken
from bff.oidc._http import get_json_object
from bff.telemetry import metrics
from bff.types import Clock

logger = logging.getLogger(__name__)

#: Key types allowed to verify ID and logout tokens: public asymmetric keys only.
PUBLIC_KEY_TYPES = frozenset({"RSA", "EC", "OKP"})
#: Members of a private JWK (RFC 7518 6.2.2, 6.3.2; RFC 8037 2): dropped so a leaked private key is used as public.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth"})
#: The curve each ECDSA algorithm requires (RFC 7518 3.4).
_EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}

#: Why the key set is fetched (``bff_jwks_fetch_total{trigger}``).
FetchTrigger = Literal["startup", "unknown_kid", "expired"]
_FETCHES = {trigger: metrics.JWKS_FETCH.labels(trigger=trigger) for trigger in get_args(FetchTrigger)}


class TokenSource(enum.Enum):
    """Where a token to verify came from: it decides whether an unknown ``kid`` may refetch the JWKS at once."""

    #: In the answer to bff's own client-authenticated request to the token endpoint (OpenID Connect Core 3.1.3.7).
    TOKEN_ENDPOINT = "token_endpoint"  # noqa: S105 - where a token came from, not a password
    #: Sent to bff by someone else (back-channel logout, a bearer token presented to an API).
    UNSOLICITED = "unsolicited"


def key_type_for(alg: str) -> str | None:
    """The JWK ``kty`` an asymmetric JWS ``alg`` needs (RFC 7518 3.1, RFC 8037 3.1); None for anything else."""
    if alg[:2] in ("RS", "PS"):
        return "RSA"
    if alg in _EC_CURVES:
        return "EC"
    if alg == "EdDSA":
        return "OKP"
    return None


def key_fits(key: Key, alg: str) -> bool:
    """Whether ``key`` may verify a signature made with ``alg``: right type and curve, ``use``/``alg`` agree."""
    if key.key_type != key_type_for(alg):
        return False
    if isinstance(key, ECKey) and key.curve_name != _EC_CURVES[alg]:
        return False
    if isinstance(key, OKPKey) and key.curve_name not in ("Ed25519", "Ed448"):
        return False
    use = key.get("use")
    declared_alg = key.get("alg")
    return use in (None, "sig") and declared_alg in (None, alg)


def _import_public_keys(data: dict[str, Any], jwks_uri: str) -> KeySet:
    raw_keys = data.get("keys")
    if not isinstance(raw_keys, list):
        raise IdPUnavailable(f"JWKS: {jwks_uri} has no 'keys' array")
    keys: list[Key] = []
    for index, raw in enumerate(raw_keys):
        if not isinstance(raw, dict) or raw.get("kty") not in PUBLIC_KEY_TYPES:
            kty = raw.get("kty") if isinstance(raw, dict) else None
            logger.warning("JWKS %s: key %d skipped (kty %r is not an asymmetric key type)", jwks_uri, index, kty)
            continue
        if not isinstance(raw.get("kid", ""), str):
            logger.warning("JWKS %s: key %d skipped (kid is not a string)", jwks_uri, index)
            continue
        public = {name: value for name, value in raw.items() if name not in _PRIVATE_MEMBERS}
        try:
            key = import_key(public, raw["kty"])
        except (JoseError, ValueError, TypeError) as exc:
            logger.warning("JWKS %s: key %d skipped (%s)", jwks_uri, index, type(exc).__name__)
            continue
        keys.append(key)
    # KeySet fills in a missing kid with the RFC 7638 thumbprint; a token without kid is matched by type instead.
    return KeySet(keys)


class JwksCache:
    """The IdP's public signing keys, fetched on first use, again after ``max_age`` and for an unknown ``kid``.

    Refetches for unknown ``kid`` values in ``UNSOLICITED`` tokens happen at most once per ``min_refetch_interval``;
    the first one may follow the initial fetch at once (a key rotated just after startup is picked up without
    waiting). ``TOKEN_ENDPOINT`` tokens refetch every time, single-flight. After ``max_age`` the set is fetched again
    so a key the IdP withdrew stops being trusted; if that fetch fails the old set is kept (an IdP outage must not
    stop logins that the cached keys can still verify) and retried later.

    Every fetch runs under one lock and is numbered when it starts; ``_done`` remembers the number and outcome of
    the last one that finished, which is how a waiting caller knows whether a fetch it can use has happened.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        jwks_uri: str,
        *,
        clock: Clock,
        min_refetch_interval: float = 60.0,
        max_age: float = 3600.0,
    ) -> None:
        self._client = client
        self._jwks_uri = jwks_uri
        self._clock = clock
        self._min_refetch_interval = min_refetch_interval
        self._max_age = max_age
        self._keys: KeySet | None = None
        self._stale_at = 0.0
        self._last_kid_refetch: float | None = None
        #: One fetch at a time: concurrent logins with a new kid share one refetch.
        self._lock = asyncio.Lock()
        #: Fetches started so far, whether one is running, and the number and failure (None: success) of the last
        #: one that finished.
        self._started = 0
        self._fetching = False
        self._done: tuple[int, IdPUnavailable | None] = (0, None)

    @property
    def jwks_uri(self) -> str:
        return self._jwks_uri

    async def refresh(self, trigger: FetchTrigger = "startup") -> None:
        """Fetch the key set now (also used at startup to check that the JWKS answers)."""
        _FETCHES[trigger].inc()
        self._started += 1
        number = self._started
        self._fetching = True
        try:
            data = await get_json_object(self._client, self._jwks_uri, what="JWKS", route="idp:jwks")
            keys = _import_public_keys(data, self._jwks_uri)
        except IdPUnavailable as exc:
            self._done = (number, exc)
            raise
        finally:
            self._fetching = False
        self._keys = keys
        self._stale_at = self._clock() + self._max_age
        self._done = (number, None)
        logger.info("JWKS %s: %d signing key(s) loaded", self._jwks_uri, len(keys.keys))

    async def get_key(self, kid: str | None, alg: str, *, source: TokenSource) -> Key:
        """The key that verifies a token with header ``kid`` and ``alg``, from a token that came from ``source``.

        Without a ``kid`` the key set must hold exactly one key suitable for ``alg``. Raises
        :class:`~bff.errors.InvalidIdToken` when no key fits, :class:`~bff.errors.IdPUnavailable` when the JWKS
        cannot be fetched and nothing is cached (or, for a ``TOKEN_ENDPOINT`` token, when the refetch fails).
        """
        keys = await self._current()
        key = self._find(keys, kid, alg)
        if key is not None:
            return key
        if source is TokenSource.TOKEN_ENDPOINT:
            await self._refetch_for_token_endpoint(kid, alg, seen=self._started, in_flight=self._fetching)
            refetched = True
        else:
            refetched = await self._refetch_for_unknown_key(keys)
        if refetched:
            key = self._find(await self._current(), kid, alg)
            if key is not None:
                return key
        raise InvalidIdToken("unknown signing key")

    async def _current(self) -> KeySet:
        if self._keys is None or self._clock() >= self._stale_at:
            async with self._lock:
                if self._keys is None or self._clock() >= self._stale_at:
                    try:
                        await self.refresh("startup" if self._keys is None else "expired")
                    except IdPUnavailable:
                        if self._keys is None:
                            raise
                        logger.warning("JWKS %s: refetch failed, keeping the cached keys", self._jwks_uri)
                        self._stale_at = self._clock() + self._min_refetch_interval
        assert self._keys is not None
        return self._keys

    async def _refetch_for_token_endpoint(self, kid: str | None, alg: str, *, seen: int, in_flight: bool) -> None:
        """Refetch for an unknown key in a token from the token endpoint, never rate-limited, single-flight.

        ``seen`` is the number of fetches started when the caller missed the key, ``in_flight`` whether the last of
        them was still running. Under the lock, a fetch that started later and finished meanwhile answers for the
        caller (its failure too); so does any fetch that brought the key, and the failure of the fetch that was in
        flight (the IdP is down). Otherwise the caller fetches, and the callers queued behind it use that fetch.
        """
        async with self._lock:
            number, failure = self._done
            if number > seen or (in_flight and number == seen and failure is not None):
                if failure is not None:
                    raise IdPUnavailable(failure.message) from failure
                return
            if self._keys is not None and self._find(self._keys, kid, alg) is not None:
                return
            await self.refresh("unknown_kid")

    async def _refetch_for_unknown_key(self, seen: KeySet) -> bool:
        """Refetch once for an unknown key, unless another such refetch happened within ``min_refetch_interval``.

        Returns whether a newer key set than ``seen`` is now cached (fetched here or by a concurrent caller).
        """
        async with self._lock:
            if self._keys is not seen:
                return True
            now = self._clock()
            if self._last_kid_refetch is not None and now - self._last_kid_refetch < self._min_refetch_interval:
                logger.debug("JWKS %s: refetch for an unknown kid skipped (rate limit)", self._jwks_uri)
                return False
            self._last_kid_refetch = now
            await self.refresh("unknown_kid")
            return True

    @staticmethod
    def _find(keys: KeySet, kid: str | None, alg: str) -> Key | None:
        if kid is not None:
            named = [key for key in keys if key.kid == kid]
            if not named:
                return None
            # A kid the JWKS knows, but for another key type: the token is forged or broken, refetching won't help.
            for key in named:
                if key_fits(key, alg):
                    return key
            raise InvalidIdToken("signing key does not match the token's alg")
        # OpenID Connect Core 10.1: kid may be omitted when the JWKS holds a single key for the algorithm.
        fitting = [key for key in keys if key_fits(key, alg)]
        if len(fitting) == 1:
            return fitting[0]
        if fitting:
            raise InvalidIdToken("token has no kid and several signing keys fit")
        return None
