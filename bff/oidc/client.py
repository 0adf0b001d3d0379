"""The OAuth 2.0 / OpenID Connect client: code exchange, refresh, client credentials, token exchange, revocation and
the end-session URL (a login's authorization request is ``bff.oidc.authorization``'s).

The IdP's answers are translated here, where they enter (the core of this module):

- an OAuth error body with ``invalid_grant`` (RFC 6749 5.2) is :class:`~bff.errors.InvalidGrant`: the code or refresh
  token is dead and the session with it;
- any other OAuth error body (``invalid_client``, ``invalid_scope``, ...) is :class:`~bff.errors.OAuthError` carrying
  ``oauth_error``;
- timeouts, connection errors, 5xx, 429 and anything that is not a well-formed answer are
  :class:`~bff.errors.IdPUnavailable`: not fatal, the session is kept and the call retried later.

Messages name the endpoint, the grant and the OAuth error code; never a token, a code or a secret.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import httpx

from bff.errors import (
    IdPUnavailable,
    InvalidGrant,
    InvalidIdToken,
    OAuthError,
    TokenExchangeDenied,
    TokenExchangeRefused,
)
from bff.models import TokenSet
from bff.oidc._http import OAUTH_ERROR_CODE, json_object, metered
from bff.oidc.authorization import with_query
from bff.oidc.client_auth import ClientAuth
from bff.oidc.discovery import ProviderMetadata
from bff.types import JSONObject

logger = logging.getLogger(__name__)

#: RFC 8693 2.1 / 3.
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a grant URI
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a type URI, not a password
#: Refusals of a token exchange that say the subject token (the user's) is not acceptable, not the request.
_SUBJECT_REFUSED = frozenset({"invalid_grant", "invalid_token"})
#: Codes that, although sent as OAuth errors, say the IdP is down rather than the request wrong (RFC 6749 4.1.2.1).
_TRANSIENT_ERRORS = frozenset({"server_error", "temporarily_unavailable"})


def _seconds(data: JSONObject, name: str, what: str) -> float | None:
    value: Any = data.get(name)
    if value is None:
        return None
    # Some IdPs (Azure AD v1) send expires_in as a string of digits; accept that, refuse anything else.
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise IdPUnavailable(f"{what}: {name} is not a number of seconds")
    return float(value)


def _optional_string(data: JSONObject, name: str, what: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise IdPUnavailable(f"{what}: {name} is not a string")
    return value or None  # "" is as good as absent (some IdPs send scope="" for client credentials)


class OIDCClient:
    """Talks to one IdP's token, revocation and logout endpoints with the configured client authentication.

    ``auth`` holds the settings, the IdP's metadata, the clock, the DPoP prover and the HTTP client, which is owned by
    the caller (the app's lifespan), built by :func:`bff.idp_http.create_idp_client`.
    """

    def __init__(self, auth: ClientAuth) -> None:
        #: The client authentication and the POST every back-channel call goes through (the PAR client's too).
        self.auth = auth
        # RFC 8705 5: a client that presents a certificate uses the IdP's mTLS aliases where it has them.
        metadata = auth.metadata
        aliases = metadata.mtls_endpoint_aliases if auth.settings.client_cert else {}
        self._token_endpoint = aliases.get("token_endpoint", metadata.token_endpoint)
        self._revocation_endpoint = aliases.get("revocation_endpoint", metadata.revocation_endpoint)

    @property
    def metadata(self) -> ProviderMetadata:
        return self.auth.metadata

    # --- front channel --------------------------------------------------------------------------------------------

    def end_session_url(
        self, *, id_token_hint: str | None, post_logout_redirect_uri: str | None, state: str | None = None
    ) -> str | None:
        """RP-Initiated Logout 1.0 section 2; None when the IdP has no ``end_session_endpoint``."""
        endpoint = self.auth.metadata.end_session_endpoint
        if endpoint is None:
            return None
        params = {"client_id": self.auth.settings.client_id}
        if id_token_hint:
            params["id_token_hint"] = id_token_hint
        if post_logout_redirect_uri:
            params["post_logout_redirect_uri"] = post_logout_redirect_uri
            if state:
                params["state"] = state
        return with_query(endpoint, params)

    # --- back channel ---------------------------------------------------------------------------------------------

    async def exchange_code(self, code: str, code_verifier: str, redirect_uri: str) -> TokenSet:
        """The authorization code grant with PKCE (RFC 6749 4.1.3, RFC 7636 4.5). The answer must hold an
        ``id_token`` (Core 3.1.3.3); validating it is the caller's job (it holds the nonce)."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
        }
        tokens = await self._token_request(form, "authorization_code")
        if tokens.id_token is None:
            raise InvalidIdToken("token endpoint answered the authorization_code grant without an id_token")
        return tokens

    async def refresh(
        self,
        refresh_token: str,
        *,
        scopes: Sequence[str] = (),
        resource: str | None = None,
        io_timeout: float | None = None,
    ) -> TokenSet:
        """RFC 6749 6, with RFC 8707 ``resource``. ``refresh_token`` is None in the result when the IdP did not
        rotate it; keeping the old one is the caller's decision. ``io_timeout`` replaces ``[oidc] timeout`` for
        this call's connect, reads and writes (a refresh may wait longer than a browser does: see ``bff.tokens``);
        bounding the whole call is the caller's job."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        return await self._token_request(self._scoped(form, scopes, resource), "refresh_token", io_timeout=io_timeout)

    async def probe(self, *, io_timeout: float) -> bool:
        """Whether the token endpoint answers at all: a POST without a grant or credentials, which a working
        endpoint refuses (RFC 6749 5.2: 400 or 401), while a failing one times out, refuses the connection or
        answers 5xx/429. Nothing is spent and no credential is sent."""
        endpoint = self._token_endpoint
        try:
            response = await metered(
                "idp:token",
                "POST",
                endpoint,
                self.auth.http.post(
                    endpoint,
                    data={},
                    headers={"Accept": "application/json"},
                    timeout=httpx.Timeout(io_timeout, connect=min(io_timeout, 5.0)),
                ),
            )
        except httpx.HTTPError:
            return False
        return response.status_code < 500 and response.status_code != 429

    async def client_credentials(self, *, scopes: Sequence[str] = (), resource: str | None = None) -> TokenSet:
        """RFC 6749 4.4: a token for bff itself, for routes with ``token = "client"``."""
        form = {"grant_type": "client_credentials"}
        return await self._token_request(self._scoped(form, scopes, resource), "client_credentials")

    async def token_exchange(
        self,
        subject_token: str,
        *,
        audience: str | None = None,
        resource: str | None = None,
        scope: str | None = None,
        io_timeout: float | None = None,
    ) -> TokenSet:
        """RFC 8693 2.1: an access token for ``audience``/``resource`` in exchange for the user's access token
        (impersonation: no actor token). A refusal is :class:`~bff.errors.TokenExchangeDenied` when it is about the
        subject token, else :class:`~bff.errors.TokenExchangeRefused`; never ``InvalidGrant``, which would end the
        session. A refresh token in the answer is dropped: bff exchanges again instead (RFC 8693 2.2.1)."""
        form = {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": subject_token,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "requested_token_type": ACCESS_TOKEN_TYPE,
        }
        if audience:
            form["audience"] = audience
        if resource:
            form["resource"] = resource
        if scope:
            form["scope"] = scope
        what = "token endpoint (token-exchange)"
        try:
            answer = await self.auth.post(
                self._token_endpoint, form, what=what, route="idp:token", io_timeout=io_timeout
            )
            response = _checked(answer, what)
        except IdPUnavailable:
            raise
        except OAuthError as exc:
            code = exc.oauth_error or "invalid_request"
            refused = TokenExchangeDenied if code in _SUBJECT_REFUSED else TokenExchangeRefused
            raise refused(f"the identity provider refused the token exchange: {code}", oauth_error=code) from exc
        data = json_object(response, what=what)
        # RFC 8693 2.2.1: issued_token_type is required; an IdP that issued something else is not used.
        if data.get("issued_token_type") != ACCESS_TOKEN_TYPE:
            raise IdPUnavailable(f"{what}: issued_token_type is not an access token")
        tokens = self._token_set(data, what)
        return TokenSet(
            access_token=tokens.access_token,
            token_type=tokens.token_type,
            expires_at=tokens.expires_at,
            scope=tokens.scope,
        )

    async def revoke(self, token: str, token_type_hint: str = "refresh_token") -> None:  # noqa: S107
        """RFC 7009 2.1; a no-op when the IdP has no ``revocation_endpoint``. Failures raise; the caller (logout)
        usually ignores them, since the session is gone either way."""
        endpoint = self._revocation_endpoint
        if endpoint is None:
            return
        form = {"token": token, "token_type_hint": token_type_hint}
        # RFC 7009 2.2: 200 whether or not the token was valid; the body is irrelevant.
        what = "revocation endpoint"
        _checked(await self.auth.post(endpoint, form, what=what, route="idp:revocation"), what)

    # --- internals ------------------------------------------------------------------------------------------------

    @staticmethod
    def _scoped(form: dict[str, str], scopes: Sequence[str], resource: str | None) -> dict[str, str]:
        if scopes:
            form["scope"] = " ".join(scopes)
        if resource:
            form["resource"] = resource
        return form

    async def _token_request(self, form: dict[str, str], grant: str, *, io_timeout: float | None = None) -> TokenSet:
        what = f"token endpoint ({grant})"
        dpop = self.auth.dpop is not None
        response = await self.auth.post(
            self._token_endpoint, form, what=what, route="idp:token", io_timeout=io_timeout, dpop=dpop
        )
        _checked(response, what)
        return self._token_set(json_object(response, what=what), what)

    def _token_set(self, data: JSONObject, what: str) -> TokenSet:
        """A successful token answer (RFC 6749 5.1), checked field by field."""
        access_token = data.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise IdPUnavailable(f"{what}: the answer has no access_token")
        token_type = data.get("token_type")
        # RFC 6749 5.1: token_type is case insensitive. With DPoP, only a DPoP token will do (RFC 9449 5): a Bearer
        # answer means the IdP did not bind it, and bff fails closed rather than send an unbound token.
        bound = self.auth.dpop is not None
        expected = "dpop" if bound else "bearer"
        if not isinstance(token_type, str) or token_type.lower() != expected:
            if bound and isinstance(token_type, str) and token_type.lower() == "bearer":
                raise OAuthError(f"{what}: token_type is Bearer, not DPoP (the IdP did not bind the token)")
            raise IdPUnavailable(f"{what}: token_type is not {'DPoP' if bound else 'Bearer'}")
        now = self.auth.clock()
        expires_in = _seconds(data, "expires_in", what)
        # Keycloak sends refresh_expires_in = 0 for offline tokens: "does not expire", not "already expired".
        refresh_expires_in = _seconds(data, "refresh_expires_in", what) or None
        return TokenSet(
            access_token=access_token,
            token_type="DPoP" if bound else "Bearer",
            expires_at=None if expires_in is None else now + expires_in,
            refresh_token=_optional_string(data, "refresh_token", what),
            refresh_expires_at=None if refresh_expires_in is None else now + refresh_expires_in,
            id_token=_optional_string(data, "id_token", what),
            scope=_optional_string(data, "scope", what),
        )


def _checked(response: httpx.Response, what: str) -> httpx.Response:
    """The token or revocation endpoint's answer when it is a 200; any other is translated (RFC 6749 5.2, RFC 7009
    2.2.1)."""
    status = response.status_code
    if status == 200:
        return response
    if status == 429 or status >= 500:
        raise IdPUnavailable(f"{what}: HTTP {status}")
    if status not in (400, 401, 403):
        raise IdPUnavailable(f"{what}: unexpected HTTP {status}")
    try:
        body = json_object(response, what=what)
    except IdPUnavailable as exc:
        raise IdPUnavailable(f"{what}: HTTP {status} without an OAuth error body") from exc
    code = body.get("error")
    if not isinstance(code, str) or not OAUTH_ERROR_CODE.match(code):
        raise IdPUnavailable(f"{what}: HTTP {status} without a valid OAuth error code")
    logger.info("%s refused the request: %s (HTTP %d)", what, code, status)
    if code == "invalid_grant":
        raise InvalidGrant(f"{what}: invalid_grant", oauth_error=code)
    if code in _TRANSIENT_ERRORS:
        raise IdPUnavailable(f"{what}: {code}", oauth_error=code)
    raise OAuthError(f"{what}: {code}", oauth_error=code)
