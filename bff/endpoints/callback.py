"""``GET /bff/callback``: finish the login.

Order matters (RFC 9700 4.7, RFC 9207, OpenID Connect Core 3.1.3.7): open the login sealed in this browser's
login cookie for the ``state`` (which binds the callback to the browser that started the login), then consume the
state with a one-time marker in the store, so a replayed or failed callback can never be retried, on any instance;
refuse an IdP error; check the ``iss`` parameter; only then spend the code, validate the ID token (signature,
``iss``, ``aud`` with no untrusted extra audience, ``azp``, ``exp``, ``iat``, ``nonce``, ``at_hash`` against the
access token), check a step-up's ``acr``/``auth_time``/``sub`` (``bff.endpoints.step_up``) and create a session
under a fresh id. Every failure is a 400 page and creates no session (a failed step-up keeps the one the browser
had). Whatever the outcome, the answer drops the login cookie of the ``state`` (here on success, in the app's error
handler otherwise); the browser's other pending logins (other tabs) stay.

Each callback counts once in ``bff_login_total{outcome}``: ``ok``; ``idp_error``; ``expired`` (``login_timeout``);
``invalid_state`` for a refused state, login cookie, one-time marker, ``iss`` or ``nonce`` (what a forged, replayed
or injected callback trips); ``error`` for anything else (the code refused, the IdP or the store down).
"""

from __future__ import annotations

import logging
import re
from typing import Literal, get_args

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bff.config import Config
from bff.crypto import constant_time_equal
from bff.endpoints.common import NO_STORE, SessionCookie
from bff.endpoints.login import LoginCookies
from bff.endpoints.step_up import check_step_up
from bff.errors import IdPError, InvalidGrant, InvalidIdToken, InvalidState, LoginExpired, LoginFailed, NonceMismatch
from bff.oidc.provider import IdentityProvider
from bff.session.manager import SessionManager
from bff.telemetry import metrics
from bff.types import JSONObject

logger = logging.getLogger("bff.login")

_ERROR_CODE = re.compile(r"^[a-z_]{1,64}$")
MAX_PARAM = 4096

LoginOutcome = Literal["ok", "idp_error", "invalid_state", "expired", "error"]
_OUTCOMES = {outcome: metrics.LOGIN.labels(outcome=outcome) for outcome in get_args(LoginOutcome)}


def login_outcome(exc: Exception) -> LoginOutcome:
    """How a failed callback counts (the module docstring)."""
    if isinstance(exc, IdPError):
        return "idp_error"
    if isinstance(exc, LoginExpired):
        return "expired"
    if isinstance(exc, InvalidState | NonceMismatch):
        return "invalid_state"
    return "error"


class Callback:
    def __init__(
        self,
        config: Config,
        sessions: SessionManager,
        idp: IdentityProvider,
        login_cookies: LoginCookies,
        cookie: SessionCookie,
    ) -> None:
        self.config = config
        self.sessions = sessions
        self.idp = idp
        self.login_cookies = login_cookies
        self.cookie = cookie

    async def handle(self, request: Request) -> Response:
        try:
            response = await self._finish(request)
        except Exception as exc:
            _OUTCOMES[login_outcome(exc)].inc()
            raise
        _OUTCOMES["ok"].inc()
        return response

    async def _finish(self, request: Request) -> Response:
        params = request.query_params
        if any(len(v) > MAX_PARAM for v in params.values()):
            raise InvalidState("callback parameters are too long")
        state = params.get("state")
        if not state:
            raise InvalidState("the callback has no state parameter")
        client = self.idp.client
        login = self.login_cookies.read(request, state)
        if not await self.sessions.logins.consume(login):
            raise InvalidState("this login was already used; start the login again")

        error = params.get("error")
        if error is not None:
            error_code = error if _ERROR_CODE.match(error) else "unknown_error"
            logger.info("login refused by the IdP: %s", error_code)
            raise IdPError(f"the identity provider refused the login ({error_code})")

        # RFC 9207: when present, iss must be our issuer; when the IdP advertises it, it must be present.
        iss = params.get("iss")
        if iss is not None and not constant_time_equal(iss, self.idp.metadata.issuer):
            raise InvalidState("the authorization response came from another issuer (RFC 9207 iss mismatch)")
        if iss is None and self.idp.metadata.authorization_response_iss_parameter_supported:
            raise InvalidState("the authorization response lacks the iss parameter the IdP advertises (RFC 9207)")

        code = params.get("code")
        if not code:
            raise InvalidState("the callback has no code parameter")

        try:
            tokens = await client.exchange_code(code, login.code_verifier, self.config.oidc.redirect_uri)
        except InvalidGrant as exc:  # an expired, replayed or foreign code: a failed login, not an ended session
            raise LoginFailed("the identity provider refused the authorization code (expired or already used)") from exc
        if not tokens.id_token:
            raise InvalidIdToken("the token response has no id_token (is the 'openid' scope granted?)")
        claims = await self.idp.validate_id_token(tokens.id_token, nonce=login.nonce, access_token=tokens.access_token)

        # Not strict: a previous session in a newer release's store format must not fail the login; it is replaced too.
        previous = await self.cookie.current(request, slide=False, strict=False)
        check_step_up(  # before the previous session is touched: a failed step-up keeps it
            login,
            claims,
            previous_sub=None if previous is None else previous.loaded.session.sub,
            now=self.sessions.clock(),
            leeway=self.config.oidc.clock_skew,
        )
        if previous is not None:
            # A new login replaces the old session (no fixation).
            await self.sessions.delete(previous.loaded, reason="replaced")
        elif (previous_id := self.cookie.session_id(request)) is not None:
            await self.sessions.end_key(self.sessions.key_for(previous_id), reason="replaced")
        session_id, _ = await self.sessions.create(
            sub=str(claims["sub"]),
            sid=_string_or_none(claims.get("sid")),
            claims=self._user_claims(claims),
            tokens=tokens,
        )
        logger.info("login completed")
        response = RedirectResponse(
            self.config.server.public_origin + login.return_to,
            status_code=302,
            headers={**NO_STORE, "Referrer-Policy": "no-referrer"},
        )
        self.cookie.set(response, session_id)
        self.login_cookies.clear(request, response)
        return response

    def _user_claims(self, claims: JSONObject) -> JSONObject:
        return {k: claims[k] for k in self.config.oidc.user_claims if k in claims}


def _string_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
