"""authlib's grants and endpoints, filled in for this IdP.

authlib decides (client authentication, redirect URI and scope checks, PKCE, ``prompt``, the ID token's standard
claims, RFC 7009 and RP-initiated logout rules); the hooks below only load and store, through ``oauth.wait``:

* :class:`CodeGrant` (RFC 6749 4.1) with :class:`S256CodeChallenge` (RFC 7636, S256 only and required for every
  client, RFC 9700 2.1.1) and :class:`IdToken` (OpenID Connect Core 3.1);
* :class:`RefreshGrant` (RFC 6749 6) with rotation and reuse detection, and :class:`RefreshIdToken` (Core 12.2);
* :class:`ClientCredentials` (RFC 6749 4.4);
* :class:`TokenExchange` (RFC 8693: an access token of this IdP's for one allowed audience of the client's);
* :class:`Revocation` (RFC 7009) and :class:`EndSession` (OpenID Connect RP-Initiated Logout 1.0).

Each grant checks the RFC 8707 ``resource`` before anything is spent, and overrides ``generate_token``, authlib's
seam between a validated request and its token, so the tokens come from ``TokenIssuer`` (which needs the request:
the refresh family, the audience).
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import (
    AuthorizationCodeGrant,
    ClientCredentialsGrant,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    RefreshTokenGrant,
    UnauthorizedClientError,
)
from authlib.oauth2.rfc6749.grants import BaseGrant, TokenEndpointMixin
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import OpenIDCode, OpenIDToken
from authlib.oidc.rpinitiated import EndSessionEndpoint, EndSessionRequest
from joserfc.jwk import KeySet

from bff.types import JSONObject
from bff_devtools.devidp.accounts import user_claims
from bff_devtools.devidp.issuer import ACCESS_TOKEN_TYPE, IdPServices, RevocableToken, Subject
from bff_devtools.devidp.models import Client, RefreshCredential, StoredCode
from bff_devtools.devidp.mtls import x5t_s256
from bff_devtools.devidp.oauth import DevAuthorizationServer, StarletteOAuth2Request, wait
from bff_devtools.devidp.records import AuthorizationCode
from bff_devtools.devidp.settings import TOKEN_EXCHANGE

_TOKEN_AUTH_METHODS = [
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
    "tls_client_auth",
    "self_signed_tls_client_auth",
    "none",
]


class InvalidTargetError(OAuth2Error):  # type: ignore[misc]  # authlib is untyped
    """RFC 8707 2: the requested ``resource`` is unknown or not allowed."""

    error = "invalid_target"


def _services(grant: Any) -> IdPServices:
    server: DevAuthorizationServer = grant.server
    return server.services


def _audience(request: StarletteOAuth2Request, services: IdPServices) -> str:
    """The ``aud`` of the access token: the RFC 8707 ``resource`` the client asked for, if allowed, else the
    configured audience."""
    resources = request.payload.datalist.get("resource", [])
    if not resources:
        return services.settings.audience
    if len(resources) > 1:
        raise InvalidTargetError("Only one resource per token request.")
    if resources[0] == services.settings.audience or resources[0] in services.settings.resources:
        return str(resources[0])
    raise InvalidTargetError("The resource is not known to this server.")


def _binding(request: StarletteOAuth2Request) -> str | None:
    """RFC 8705 3: the ``x5t#S256`` to bind the access token to, when the client registered for bound tokens and
    the token request came over a connection with a client certificate."""
    client: Client = request.client
    der = request.http.client_cert
    if not client.registration.tls_client_certificate_bound_access_tokens or der is None:
        return None
    return x5t_s256(der)


class S256CodeChallenge(CodeChallenge):  # type: ignore[misc]
    """PKCE required for every client, and only with S256: ``plain`` would send the verifier in the front
    channel (RFC 9700 2.1.1; RFC 7636 4.2 makes S256 mandatory to implement)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]  # noqa: RUF012 - authlib's class attribute

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: missing 'code_challenge'.")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("PKCE: 'code_challenge_method' must be S256.")
        super().validate_code_challenge(grant, redirect_uri)


class CodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = _TOKEN_AUTH_METHODS

    def validate_token_request(self) -> None:
        self.audience = _audience(self.request, _services(self))  # before the code is spent
        super().validate_token_request()

    def save_authorization_code(self, code: str, request: StarletteOAuth2Request) -> None:
        subject: Subject = request.user
        data = request.payload.data
        record = AuthorizationCode(
            client_id=request.client.client_id,
            redirect_uri=request.payload.redirect_uri,
            scope=request.scope,
            username=subject.user.username,
            sid=subject.sid,
            auth_time=subject.auth_time,
            code_challenge=data["code_challenge"],
            code_challenge_method=data["code_challenge_method"],
            nonce=data.get("nonce"),
            acr=subject.acr,
            dpop_jkt=data.get("dpop_jkt"),
        )
        wait(_services(self).codes.save, code, record)

    def query_authorization_code(self, code: str, client: Client) -> StoredCode | None:
        """Takes the code (one use, atomically); a code issued to another client is burnt and refused."""
        record = wait(_services(self).codes.take, code)
        if record is None or record.client_id != client.client_id:
            return None
        if record.dpop_jkt is not None and record.dpop_jkt != self.request.http.dpop_jkt:
            # RFC 9449 10: a code bound to a DPoP key is redeemed with a proof of that key only (and is burnt).
            raise InvalidGrantError("The code is bound to another DPoP key (dpop_jkt).")
        return StoredCode(record)

    def delete_authorization_code(self, authorization_code: StoredCode) -> None:
        """Nothing left to delete: ``query_authorization_code`` took it."""

    def authenticate_user(self, authorization_code: StoredCode) -> Subject | None:
        record = authorization_code.record
        user = _services(self).settings.user(record.username)
        return None if user is None else Subject(user, record.sid, record.auth_time, record.acr)

    def generate_token(
        self, user: Subject, scope: str, grant_type: str | None = None, expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> JSONObject:  # fmt: skip
        services = _services(self)
        answer: JSONObject = wait(
            services.issuer.for_code,
            client_id=self.request.client.client_id,
            subject=user,
            scope=scope,
            audience=self.audience,
            with_refresh_token=include_refresh_token,
            binding=_binding(self.request),
            jkt=self.request.http.dpop_jkt,
        )
        return answer


class RefreshGrant(RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = _TOKEN_AUTH_METHODS
    #: Rotation: every refresh answers with a new refresh token (RFC 9700 4.14.2).
    INCLUDE_NEW_REFRESH_TOKEN = True

    def validate_token_request(self) -> None:
        self.audience = _audience(self.request, _services(self))  # before the refresh token is looked at
        super().validate_token_request()

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshCredential | None:
        """The family of the token if it may be used; a reused (spent) token revokes its family here."""
        loaded = wait(_services(self).issuer.redeem, refresh_token)
        return None if loaded is None else RefreshCredential(loaded)

    def authenticate_user(self, refresh_token: RefreshCredential) -> Subject | None:
        return _services(self).issuer.subject_of(refresh_token.loaded.family)

    def revoke_old_credential(self, refresh_token: RefreshCredential) -> None:
        """Nothing left to do: ``generate_token`` spent it by rotating the family."""

    def generate_token(
        self, user: Subject, scope: str, grant_type: str | None = None, expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> JSONObject:  # fmt: skip
        services = _services(self)
        credential: RefreshCredential = self.request.refresh_token
        answer: JSONObject | None = wait(
            services.issuer.for_refresh,
            credential.loaded,
            scope=scope,
            audience=self.audience,
            binding=_binding(self.request),
            jkt=self.request.http.dpop_jkt,
        )
        if answer is None:
            raise InvalidGrantError("The refresh token was used concurrently; its family is revoked.")
        return answer


class ClientCredentials(ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = [  # noqa: RUF012
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
        "tls_client_auth",
        "self_signed_tls_client_auth",
    ]

    def validate_token_request(self) -> None:
        self.audience = _audience(self.request, _services(self))
        super().validate_token_request()

    def generate_token(
        self, user: None = None, scope: str | None = None, grant_type: str | None = None,
        expires_in: int | None = None, include_refresh_token: bool = False,
    ) -> JSONObject:  # fmt: skip
        services = _services(self)
        client: Client = self.request.client
        answer: JSONObject = wait(
            services.issuer.for_client,
            client_id=client.client_id,
            scope=client.get_allowed_scope(scope),
            audience=self.audience,
            binding=_binding(self.request),
            jkt=self.request.http.dpop_jkt,
        )
        return answer


class TokenExchange(BaseGrant, TokenEndpointMixin):  # type: ignore[misc]
    """RFC 8693 impersonation: the client presents a user's access token (``subject_token``) and gets one for a
    single audience it is allowed to ask for; delegation (``actor_token``) and other token types are refused."""

    GRANT_TYPE = TOKEN_EXCHANGE
    TOKEN_ENDPOINT_AUTH_METHODS = ClientCredentials.TOKEN_ENDPOINT_AUTH_METHODS  # a confidential client's

    def validate_token_request(self) -> None:
        client: Client = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(self.GRANT_TYPE):
            raise UnauthorizedClientError("The client may not use the token exchange grant.")
        self.request.client = client
        data = self.request.payload.data
        if not data.get("subject_token"):
            raise InvalidRequestError("Missing 'subject_token'.")
        if data.get("subject_token_type") != ACCESS_TOKEN_TYPE:
            raise InvalidRequestError("Only access tokens may be exchanged ('subject_token_type').")
        if data.get("requested_token_type", ACCESS_TOKEN_TYPE) != ACCESS_TOKEN_TYPE:
            raise InvalidRequestError("Only access tokens are issued ('requested_token_type').")
        if data.get("actor_token"):
            raise InvalidRequestError("Delegation ('actor_token') is not supported.")
        datalist = self.request.payload.datalist
        targets = [*datalist.get("audience", []), *datalist.get("resource", [])]
        if len(set(targets)) != 1:
            raise InvalidTargetError("Exactly one 'audience' or 'resource' per token exchange.")
        if targets[0] not in client.registration.exchange_audiences:
            raise InvalidTargetError("The client may not exchange tokens for this audience.")
        self.audience = str(targets[0])
        scope = self.request.payload.scope
        if scope and client.get_allowed_scope(scope) != " ".join(dict.fromkeys(scope.split())):
            raise InvalidScopeError("The client may not ask for these scopes.")

    def create_token_response(self) -> tuple[int, JSONObject, Any]:
        client: Client = self.request.client
        answer: JSONObject | None = wait(
            _services(self).issuer.for_exchange,
            client_id=client.client_id,
            subject_token=self.request.payload.data["subject_token"],
            scope=self.request.payload.scope or None,
            audience=self.audience,
        )
        if answer is None:
            # RFC 8693 2.2.2: an invalid subject_token is invalid_request.
            raise InvalidRequestError("The subject token is invalid, expired or revoked.")
        return 200, answer, self.TOKEN_RESPONSE_HEADER


class _IdTokenClaims:
    """What authlib's ID token extensions ask the application: key, algorithm and the claims (OpenID Connect Core
    2 and 5.4). ``sid`` (Front/Back-Channel Logout), ``auth_time`` and ``acr`` come from the IdP session."""

    def __init__(self, services: IdPServices) -> None:
        super().__init__()
        self.services = services

    def resolve_client_private_key(self, client: Client) -> Any:
        return self.services.keys.signing_key.key

    def get_client_algorithm(self, client: Client) -> str:
        return self.services.keys.signing_key.alg

    def get_encode_header(self, client: Client) -> JSONObject:
        signing = self.services.keys.signing_key
        return {"alg": signing.alg, "kid": signing.kid, "typ": "JWT"}

    def get_client_claims(self, client: Client) -> JSONObject:
        now = int(self.services.clock())
        settings = self.services.settings
        return {"iss": settings.issuer, "aud": client.client_id, "iat": now, "exp": now + int(settings.id_token_ttl)}

    def generate_user_info(self, user: Subject, scope: str) -> JSONObject:
        return {**user_claims(user.user, scope), "sid": user.sid, "auth_time": user.auth_time, "acr": user.acr}


class IdToken(_IdTokenClaims, OpenIDCode):  # type: ignore[misc]
    """The ID token of the authorization code flow (``nonce`` from the authorization request)."""

    def exists_nonce(self, nonce: str, request: StarletteOAuth2Request) -> bool:
        """A nonce seen before from this client is a replayed authorization request (Core 15.5.2)."""
        used: bool = wait(self.services.codes.nonce_used, request.payload.client_id, nonce)
        return used


class RefreshIdToken(_IdTokenClaims, OpenIDToken):  # type: ignore[misc]
    """A fresh ID token with each refresh (Core 12.2): same ``sub``, ``sid`` and ``auth_time``, no ``nonce``."""


class Revocation(RevocationEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = _TOKEN_AUTH_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> RevocableToken | None:
        found: RevocableToken | None = wait(_services(self).issuer.find_revocable, token_string, token_type_hint)
        return found

    def revoke_token(self, token: RevocableToken, request: StarletteOAuth2Request) -> None:
        wait(_services(self).issuer.revoke, token)


class EndSession(EndSessionEndpoint):  # type: ignore[misc]
    """RP-initiated logout. authlib checks the ``id_token_hint`` signature (an expired hint is fine, section 2),
    that ``client_id`` is its audience, and redirects only to a registered ``post_logout_redirect_uri``."""

    def get_server_jwks(self) -> KeySet:
        return _services(self).keys.verification_keys()

    def get_algorithms(self) -> list[str]:
        return _services(self).keys.algorithms()

    def end_session(self, end_session_request: EndSessionRequest) -> None:
        claims = end_session_request.id_token_claims or {}
        sid, sub = claims.get("sid"), claims.get("sub")
        if isinstance(sid, str) and sid:
            wait(_services(self).sessions.end, sid, sub=sub if isinstance(sub, str) else None)


def register_grants(server: DevAuthorizationServer) -> None:
    """Register every grant, extension and endpoint of the IdP with ``server``."""
    services = server.services
    server.register_grant(CodeGrant, [S256CodeChallenge(required=True), IdToken(services)])
    server.register_grant(RefreshGrant, [RefreshIdToken(services)])
    server.register_grant(ClientCredentials)
    server.register_grant(TokenExchange)
    server.register_endpoint(Revocation)
    server.register_endpoint(EndSession)
