"""The IdP's protocol endpoints other than ``/authorize`` (see ``login``): discovery, JWKS, token, revocation,
RP-initiated logout, userinfo, and the access-token blocklist.

``GET /blocklist`` answers ``{"revoked_jtis": {"<jti>": <exp>, ...}}``: the ``jti`` of every revoked access token
that has not expired yet, with its ``exp``. An API that polls it can refuse revoked tokens before they expire. The
``jti`` values are not secret (a ``jti`` is no credential), so the list is public.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging

from authlib.oauth2.rfc6749 import OAuth2Error
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bff.types import Clock, JSONObject
from bff_devtools.acr import ACR_MFA, ACR_PWD
from bff_devtools.devidp.accounts import user_claims
from bff_devtools.devidp.client_keys import REQUEST_OBJECT_ALGS
from bff_devtools.devidp.keys import KeyRing
from bff_devtools.devidp.minter import ACCESS_TOKEN_TYP, TokenMinter
from bff_devtools.devidp.oauth import DevAuthorizationServer, HttpRequest, OAuthResponse, run_in_thread
from bff_devtools.devidp.pages import error_page, logout_confirm_page, message_page
from bff_devtools.devidp.sessions import BrowserSessions
from bff_devtools.devidp.settings import TOKEN_EXCHANGE, DevIdPSettings
from bff_devtools.devidp.storage import Blocklist
from bff_devtools.dpop_proofs import InvalidProof, Nonces, ProofVerifier, UseNonce

logger = logging.getLogger("bff_devtools.devidp.endpoints")

NO_STORE = {"Cache-Control": "no-store"}
CLAIMS_SUPPORTED = (
    *("iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "sid", "acr", "amr", "at_hash"),
    *("name", "preferred_username", "role", "email", "email_verified"),
)


class ProtocolEndpoints:
    def __init__(
        self,
        settings: DevIdPSettings,
        server: DevAuthorizationServer,
        *,
        keys: KeyRing,
        minter: TokenMinter,
        sessions: BrowserSessions,
        blocklist: Blocklist,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._server = server
        self._keys = keys
        self._minter = minter
        self._sessions = sessions
        self._blocklist = blocklist
        self._clock = clock
        nonces = Nonces(clock=clock) if settings.dpop_nonce else None
        self._dpop = ProofVerifier(clock=clock, nonces=nonces, max_remembered=settings.jti_cache_size)

    @property
    def dpop_verifier(self) -> ProofVerifier:
        """The DPoP proof checks (and nonces) the PAR endpoint shares (RFC 9449 10.1)."""
        return self._dpop

    async def discovery(self, request: Request) -> Response:
        """OpenID Connect Discovery 1.0 section 3, with RFC 8414, RFC 9207 and the logout specs' fields."""
        issuer = self._settings.issuer
        metadata: JSONObject = {
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/authorize",
            "token_endpoint": f"{issuer}/token",
            "jwks_uri": f"{issuer}/jwks",
            "userinfo_endpoint": f"{issuer}/userinfo",
            "revocation_endpoint": f"{issuer}/revoke",
            "end_session_endpoint": f"{issuer}/end_session",
            "scopes_supported": self._settings.scopes_supported(),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials", TOKEN_EXCHANGE],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": self._keys.algorithms(),
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "private_key_jwt",
                "tls_client_auth",
                "self_signed_tls_client_auth",
                "none",
            ],
            "dpop_signing_alg_values_supported": ["ES256", "RS256"],  # RFC 9449 5.1
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "code_challenge_methods_supported": ["S256"],
            "prompt_values_supported": ["none", "login"],
            "claims_supported": list(CLAIMS_SUPPORTED),
            "acr_values_supported": [ACR_PWD, ACR_MFA],
            "authorization_response_iss_parameter_supported": self._settings.iss_parameter,
            "token_endpoint_auth_signing_alg_values_supported": list(REQUEST_OBJECT_ALGS),
            "request_parameter_supported": True,
            "request_object_signing_alg_values_supported": list(REQUEST_OBJECT_ALGS),
            "require_signed_request_object": self._settings.require_signed_request_object,
            "backchannel_logout_supported": True,
            "backchannel_logout_session_supported": True,
            "frontchannel_logout_supported": False,
            "tls_client_certificate_bound_access_tokens": True,  # RFC 8705 3.3
        }
        aliases = {"token_endpoint": f"{issuer}/token", "revocation_endpoint": f"{issuer}/revoke"}
        if self._settings.par:  # RFC 9126 5
            metadata["pushed_authorization_request_endpoint"] = f"{issuer}/par"
            metadata["require_pushed_authorization_requests"] = self._settings.require_pushed_authorization_requests
            aliases["pushed_authorization_request_endpoint"] = f"{issuer}/par"
        if issuer.startswith("https://"):
            # RFC 8705 5: one TLS listener serves them all, so the aliases are the same endpoints.
            metadata["mtls_endpoint_aliases"] = aliases
        return JSONResponse(metadata)

    async def jwks(self, request: Request) -> Response:
        # Short caching: after a rotation, clients see the new key within a minute (and refetch on unknown kid).
        return JSONResponse(self._keys.jwks(), headers={"Cache-Control": "public, max-age=60"})

    async def blocklist(self, request: Request) -> Response:
        return JSONResponse({"revoked_jtis": await self._blocklist.live()}, headers=NO_STORE)

    async def token(self, request: Request) -> Response:
        """RFC 6749 3.2; errors per 5.2 (``invalid_client`` is 401 when the client tried HTTP Basic)."""
        http = await HttpRequest.read(request, issuer=self._settings.issuer)
        proofs = request.headers.getlist("dpop")
        used = None
        if proofs:
            try:
                if len(proofs) != 1:  # RFC 9449 4.3 step 1: exactly one DPoP header
                    raise InvalidProof("more than one DPoP header")  # noqa: TRY301 - answered below like the rest
                used = self._dpop.use(proofs[0], method="POST", url=f"{self._settings.issuer}/token")
            except UseNonce as exc:
                return self._dpop_error("use_dpop_nonce", exc.description)
            except InvalidProof as exc:
                return self._dpop_error("invalid_dpop_proof", exc.description)
            http = dataclasses.replace(http, dpop_jkt=used.jkt)
        elif self._settings.require_dpop:
            # RFC 9449 5.2: a client bound to DPoP must prove possession on every token request.
            return self._dpop_error("invalid_dpop_proof", "a DPoP proof is required")
        response = await run_in_thread(self._server.token_response, http)
        if used is not None and _client_refused(response):
            self._dpop.release(used)  # its jti was held for the call; a client that failed to authenticate holds none
        answer = response.to_starlette()
        if self._dpop.nonces is not None:
            answer.headers["DPoP-Nonce"] = self._dpop.nonces.current()
        return answer

    def _dpop_error(self, error: str, description: str) -> Response:
        """RFC 9449 5 and 8: a 400 OAuth error; with a nonce to use next time when nonces are demanded."""
        headers = dict(NO_STORE)
        if self._dpop.nonces is not None:
            headers["DPoP-Nonce"] = self._dpop.nonces.current()
        return JSONResponse({"error": error, "error_description": description}, status_code=400, headers=headers)

    async def revoke(self, request: Request) -> Response:
        """RFC 7009: 200 whether or not the token was known (2.2), so the answer reveals nothing."""
        http = await HttpRequest.read(request, issuer=self._settings.issuer)
        response = await run_in_thread(self._server.revocation_response, http)
        return response.to_starlette()

    async def end_session(self, request: Request) -> Response:
        """RP-Initiated Logout 1.0. With a valid ``id_token_hint``: end that IdP session at once and redirect to
        ``post_logout_redirect_uri`` only if it is registered for the client (section 3), else a page. Without
        one: ask the signed-in user to confirm (section 6), with a CSRF-protected POST."""
        http = await HttpRequest.read(request, issuer=self._settings.issuer)
        session = await self._sessions.current(request)
        params = dict(http.params)
        if request.method == "POST" and params.get("confirm") == "yes":
            if session is None:
                return message_page("Signed out", "You are not signed in.")
            if not hmac.compare_digest(params.get("csrf", "").encode(), session.csrf.encode()):
                return error_page("The sign-out form is invalid; reload it and try again.", status=403)
            await self._sessions.end(session.sid)
            signed_out = message_page("Signed out", "You are signed out of the identity provider.")
            self._sessions.clear_session_cookie(signed_out)
            return signed_out
        try:
            validated = await run_in_thread(self._server.end_session_request, http)
        except OAuth2Error as error:  # RP-Initiated Logout 4: on errors, no logout and no redirect
            return error_page(f"The logout request is invalid ({error.description or error.error}).")
        if validated.needs_confirmation:
            if session is None:
                return message_page("Signed out", "You are not signed in.")
            return logout_confirm_page(username=session.username, csrf=session.csrf)
        redirect = await run_in_thread(self._server.end_session_response, validated)
        response: Response
        if redirect is not None:
            response = redirect.to_starlette()
        else:
            response = message_page("Signed out", "You are signed out of the identity provider.")
        if session is not None and session.sid == (validated.id_token_claims or {}).get("sid"):
            self._sessions.clear_session_cookie(response)
        return response

    async def userinfo(self, request: Request) -> Response:
        """OpenID Connect Core 5.3 with a Bearer access token (RFC 6750 2.1); errors per RFC 6750 3."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return Response(status_code=401, headers={"WWW-Authenticate": "Bearer", **NO_STORE})
        claims = self._minter.verify(token.strip(), typ=ACCESS_TOKEN_TYP)
        if claims is None or claims.get("exp", 0) <= self._clock() or await self._blocklist.contains(claims["jti"]):
            return Response(status_code=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"', **NO_STORE})
        scope = str(claims.get("scope", ""))
        user = self._settings.user_by_sub(str(claims.get("sub")))
        if user is None or "openid" not in scope.split():
            return Response(
                status_code=403, headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"', **NO_STORE}
            )
        return JSONResponse(user_claims(user, scope), headers=NO_STORE)


def _client_refused(response: OAuthResponse) -> bool:
    """Whether the token endpoint refused the client itself (RFC 6749 5.2 ``invalid_client``)."""
    return isinstance(response.body, dict) and response.body.get("error") == "invalid_client"
