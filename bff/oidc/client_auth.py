"""How bff authenticates to the IdP's back-channel endpoints (token, revocation, PAR), and the one way it POSTs to
them: client credentials added (RFC 6749 2.3, OpenID Connect Core 9, RFC 7523, RFC 8705 2), a DPoP proof when
asked (RFC 9449), httpx's exceptions translated to :class:`~bff.errors.IdPUnavailable` where they enter, and the
one retry RFC 9449 8 allows when the server demands a DPoP nonce. Judging the answer's status is the caller's job:
the token endpoint answers 200, the PAR endpoint 201.
"""

from __future__ import annotations

import base64
import secrets
from pathlib import Path
from urllib.parse import quote_plus

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key, RSAKey

from bff.config import OIDCSettings
from bff.config.values import TLS_AUTH_METHODS
from bff.errors import ConfigError, IdPUnavailable
from bff.oidc._http import IdPRoute, metered
from bff.oidc.discovery import ProviderMetadata
from bff.oidc.dpop import DPoPProver
from bff.types import Clock

#: RFC 7523 2.2 / RFC 7521 4.2.
JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: Lifetime of a private_key_jwt client assertion: short, it is used once.
ASSERTION_TTL = 60
_EC_ALGS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}


def load_signing_key(path: str) -> tuple[Key, str]:
    """The private key for ``private_key_jwt`` (RFC 7523 2.2) and its algorithm: RS256 for RSA, ES* by curve."""
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(
            [f"oidc.private_key_file: cannot read the file ({exc.strerror or type(exc).__name__})"]
        ) from exc
    key_types: tuple[type[RSAKey] | type[ECKey], ...] = (RSAKey, ECKey)
    for key_type in key_types:
        try:
            key = key_type.import_key(pem)
        except (JoseError, ValueError, TypeError):
            continue
        if not key.is_private:
            break
        key.ensure_kid()  # RFC 7638 thumbprint, the kid most IdPs register for an uploaded public key
        if isinstance(key, ECKey):
            alg = _EC_ALGS.get(key.curve_name)
            if alg is None:
                break
            return key, alg
        return key, "RS256"
    raise ConfigError(["oidc.private_key_file: is not a PEM RSA or EC (P-256/384/521) private key"])


class ClientAuth:
    """The configured client authentication, and the POST every back-channel call goes through."""

    def __init__(
        self,
        settings: OIDCSettings,
        metadata: ProviderMetadata,
        http: httpx.AsyncClient,
        *,
        clock: Clock,
        dpop: DPoPProver | None = None,
    ) -> None:
        #: What the client is, where the IdP's endpoints are, how it calls and signs: ``OIDCClient`` reads them too.
        self.settings = settings
        self.metadata = metadata
        self.http = http
        self.clock = clock
        self.dpop = dpop
        #: The client's private key and its JWS algorithm: private_key_jwt assertions and request objects (RFC 9101).
        self.signing_key: tuple[Key, str] | None = None
        method = settings.token_endpoint_auth_method
        if method in ("client_secret_basic", "client_secret_post") and settings.client_secret is None:
            raise ConfigError([f"oidc.client_secret: is required for {method}"])
        if method == "private_key_jwt" and not settings.private_key_file:
            raise ConfigError(["oidc.private_key_file: is required for private_key_jwt"])
        if settings.private_key_file and (method == "private_key_jwt" or settings.request_object != "off"):
            key, alg = load_signing_key(settings.private_key_file)
            # FAPI 2.0 SP 5.4.1: no RS256; an RSA key signs PS256.
            self.signing_key = (key, "PS256" if settings.profile == "fapi2" and alg == "RS256" else alg)
        if method in TLS_AUTH_METHODS and not settings.client_cert:
            raise ConfigError([f"oidc.client_cert: is required for {method}"])

    def apply(self, form: dict[str, str], headers: dict[str, str]) -> None:
        """Add the client's credentials to a request (RFC 6749 2.3, OIDC Core 9)."""
        settings = self.settings
        method = settings.token_endpoint_auth_method
        secret = settings.client_secret.reveal() if settings.client_secret is not None else ""
        if method == "client_secret_basic":
            # RFC 6749 2.3.1: id and secret are form-urlencoded BEFORE base64, so ':' or '%' in a secret survive.
            pair = f"{quote_plus(settings.client_id, safe='')}:{quote_plus(secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        elif method == "client_secret_post":
            form["client_id"] = settings.client_id
            form["client_secret"] = secret
        elif method == "private_key_jwt":
            form["client_id"] = settings.client_id
            form["client_assertion_type"] = JWT_BEARER_ASSERTION
            form["client_assertion"] = self._client_assertion()
        else:
            # "none": a public client identifies itself only (RFC 6749 4.1.3); tls_client_auth and
            # self_signed_tls_client_auth: the certificate of the TLS connection authenticates it (RFC 8705 2).
            form["client_id"] = settings.client_id

    def _client_assertion(self) -> str:
        """RFC 7523 3 / OIDC Core 9: a one-time JWT signed with the client's private key. Its audience is the token
        endpoint, which RFC 9126 2 also obliges a PAR endpoint to accept; under ``profile = "fapi2"`` the issuer
        (FAPI 2.0 SP 5.3.2.1), which some other IdPs refuse."""
        assert self.signing_key is not None
        key, alg = self.signing_key
        now = int(self.clock())
        client_id = self.settings.client_id
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": self.metadata.issuer if self.settings.profile == "fapi2" else self.metadata.token_endpoint,
            "jti": secrets.token_urlsafe(32),
            "iat": now,
            "exp": now + ASSERTION_TTL,
        }
        return jwt.encode({"alg": alg, "kid": key.kid}, claims, key, algorithms=[alg])

    async def post(
        self,
        url: str,
        form: dict[str, str],
        *,
        what: str,
        route: IdPRoute,
        io_timeout: float | None = None,
        dpop: bool = False,
    ) -> httpx.Response:
        """POST ``form`` with the client's credentials (and a DPoP proof when ``dpop``); the answer, unjudged."""
        response = await self._post_once(url, dict(form), what=what, route=route, io_timeout=io_timeout, dpop=dpop)
        status, nonce = response.status_code, response.headers.get("dpop-nonce")
        if dpop and self.dpop is not None and self.dpop.nonce_demanded(url, status, response.content, nonce):
            # RFC 9449 8: one retry with the nonce (a fresh proof and client assertion).
            response = await self._post_once(url, dict(form), what=what, route=route, io_timeout=io_timeout, dpop=dpop)
        return response

    async def _post_once(
        self, url: str, form: dict[str, str], *, what: str, route: IdPRoute, io_timeout: float | None, dpop: bool
    ) -> httpx.Response:
        headers = {"Accept": "application/json"}
        self.apply(form, headers)
        if dpop:
            assert self.dpop is not None
            headers["DPoP"] = self.dpop.proof("POST", url)
        try:
            if io_timeout is None:
                call = self.http.post(url, data=form, headers=headers)
            else:
                limits = httpx.Timeout(io_timeout, connect=min(io_timeout, 5.0))
                call = self.http.post(url, data=form, headers=headers, timeout=limits)
            response = await metered(route, "POST", url, call)
        except httpx.TimeoutException as exc:
            raise IdPUnavailable(f"{what}: timed out") from exc
        except httpx.HTTPError as exc:
            raise IdPUnavailable(f"{what}: request failed ({type(exc).__name__})") from exc
        if dpop and 200 <= response.status_code < 300:
            assert self.dpop is not None
            self.dpop.remember_nonce(url, response.headers.get("dpop-nonce"))  # RFC 9449 8.2: a fresh nonce
        return response
