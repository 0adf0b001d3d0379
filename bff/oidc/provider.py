"""``IdentityProvider``: the IdP as the rest of bff sees it, loaded once at startup.

Discovery can fail at startup (the IdP is still booting, a network blip): the app starts anyway, ``/readyz``
answers 503 and every endpoint that needs the IdP answers ``503 not_ready`` until ``load()`` succeeds. The app's
lifespan retries with back-off.
"""

from __future__ import annotations

import httpx

from bff.config import OIDCSettings
from bff.errors import NotReady
from bff.oidc.authorization import AuthorizationRequests
from bff.oidc.client import OIDCClient
from bff.oidc.client_auth import ClientAuth
from bff.oidc.discovery import ProviderMetadata, discovery_url, fetch_metadata
from bff.oidc.dpop import DPoPProver
from bff.oidc.id_token import validate_id_token, validate_logout_token
from bff.oidc.jwks import JwksCache, TokenSource
from bff.oidc.par import PushedAuthorization
from bff.oidc.profiles import plan_authorization, request_object_signer
from bff.types import Clock, JSONObject, system_clock


class IdentityProvider:
    def __init__(
        self,
        settings: OIDCSettings,
        http: httpx.AsyncClient,
        *,
        clock: Clock = system_clock,
        dpop: DPoPProver | None = None,
        config_key: str = "oidc",
    ) -> None:
        self.settings = settings
        #: Where ``settings`` sit in the config (``frontends['shop'].oidc``): refusals name it.
        self.config_key = config_key
        #: bff's DPoP key and nonces when ``[oidc] dpop`` (token requests ask for bound tokens).
        self.dpop = dpop
        self.http = http
        self.clock = clock
        self._metadata: ProviderMetadata | None = None
        self._client: OIDCClient | None = None
        self._jwks: JwksCache | None = None
        self._authorization: AuthorizationRequests | None = None

    async def load(self) -> None:
        """Fetch the discovery document; raises IdPUnavailable (and stays not ready) when the IdP cannot be read,
        and ``ConfigError`` when its metadata cannot serve ``[oidc] par``, ``request_object`` or ``profile``
        (``bff.oidc.profiles``): bff must not start then."""
        metadata = await fetch_metadata(self.http, self.settings.issuer)
        client = OIDCClient(ClientAuth(self.settings, metadata, self.http, clock=self.clock, dpop=self.dpop))
        plan = plan_authorization(self.settings, metadata, client.auth, key=self.config_key)
        signer = request_object_signer(self.settings, metadata, client.auth, self.clock)
        par = None
        if plan.par_endpoint is not None:
            par = PushedAuthorization(client.auth, plan.par_endpoint, dpop=self.dpop is not None)
        self._authorization = AuthorizationRequests(
            self.settings,
            metadata.authorization_endpoint,
            par=par,
            signer=signer,
            dpop_jkt=None if self.dpop is None else self.dpop.jkt,
        )
        self._jwks = JwksCache(self.http, metadata.jwks_uri, clock=self.clock)
        self._client = client
        self._metadata = metadata

    @property
    def ready(self) -> bool:
        return self._metadata is not None

    @property
    def metadata(self) -> ProviderMetadata:
        if self._metadata is None:
            raise NotReady("the identity provider's metadata is not loaded yet")
        return self._metadata

    @property
    def client(self) -> OIDCClient:
        if self._client is None:
            raise NotReady("the identity provider's metadata is not loaded yet")
        return self._client

    @property
    def authorization(self) -> AuthorizationRequests:
        """How a login's authorization request is sent (plain, signed, pushed)."""
        if self._authorization is None:
            raise NotReady("the identity provider's metadata is not loaded yet")
        return self._authorization

    @property
    def jwks(self) -> JwksCache:
        if self._jwks is None:
            raise NotReady("the identity provider's metadata is not loaded yet")
        return self._jwks

    def endpoint_name(self, url: str) -> str:
        """Which of the IdP's endpoints ``url`` (without its query) is, for telemetry: ``idp:discovery``,
        ``idp:token``, ``idp:jwks``, ``idp:revocation``, ``idp:par``, ``idp:userinfo``, or ``idp`` for any other."""
        if url == discovery_url(self.settings.issuer):
            return "idp:discovery"
        metadata = self._metadata
        if metadata is not None:
            for name, endpoint in (
                ("idp:token", metadata.token_endpoint),
                ("idp:jwks", metadata.jwks_uri),
                ("idp:revocation", metadata.revocation_endpoint),
                ("idp:par", metadata.pushed_authorization_request_endpoint),
                ("idp:userinfo", metadata.userinfo_endpoint),
            ):
                if url == endpoint:
                    return name
        return "idp"

    async def validate_id_token(self, token: str, *, nonce: str | None, access_token: str) -> JSONObject:
        """An ID token from the token endpoint's answer (code exchange or refresh), with that answer's
        ``access_token`` (bound by ``at_hash`` when present)."""
        return await validate_id_token(
            token,
            jwks=self.jwks,
            issuer=self.metadata.issuer,
            client_id=self.settings.client_id,
            nonce=nonce,
            access_token=access_token,
            algorithms=self.settings.id_token_signing_algs,
            clock=self.clock,
            leeway=self.settings.clock_skew,
            source=TokenSource.TOKEN_ENDPOINT,
            trusted_audiences=self.settings.trusted_audiences,
        )

    async def validate_logout_token(self, token: str) -> JSONObject:
        """A logout token posted to the public back-channel logout endpoint."""
        return await validate_logout_token(
            token,
            jwks=self.jwks,
            issuer=self.metadata.issuer,
            client_id=self.settings.client_id,
            algorithms=self.settings.id_token_signing_algs,
            clock=self.clock,
            leeway=self.settings.clock_skew,
            trusted_audiences=self.settings.trusted_audiences,
        )
