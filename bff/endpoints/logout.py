"""``/bff/logout``: end the session here and at the IdP.

* ``GET /bff/logout?sid=...`` with the ``sid`` from ``/bff/user``'s ``logout_url`` (the sid proves a same-origin
  script read it: a CSRF guard for a plain link), answers with a redirect;
* ``POST /bff/logout`` with ``X-CSRF: 1`` answers JSON ``{"redirect": url}``: XHR requests never get a 302.

Either way: revoke the refresh token (RFC 7009) when the IdP has a revocation endpoint (a failure is logged and
does not stop the logout), delete the session, clear the cookie, and send the browser to the IdP's
``end_session_endpoint`` with ``id_token_hint`` and ``post_logout_redirect_uri`` (OpenID Connect RP-Initiated
Logout 1.0), or to ``/``.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from bff.config import Config
from bff.csrf import check_csrf, check_same_origin
from bff.endpoints.common import NO_STORE, CurrentSession, SessionCookie
from bff.errors import CsrfRejected, OAuthError, ServiceUnavailable
from bff.oidc.provider import IdentityProvider
from bff.session.manager import SessionManager

logger = logging.getLogger("bff.logout")


class Logout:
    def __init__(self, config: Config, sessions: SessionManager, idp: IdentityProvider, cookie: SessionCookie) -> None:
        self.config = config
        self.sessions = sessions
        self.idp = idp
        self.cookie = cookie

    async def handle(self, request: Request) -> Response:
        is_post = request.method == "POST"
        if is_post:
            check_csrf(request.headers, self.config.server.public_origin)
        else:
            check_same_origin(request.headers, self.config.server.public_origin)
        current = await self.cookie.current(request, slide=False)
        if current is not None and not is_post:
            sid = request.query_params.get("sid")
            if not sid or not self.sessions.check_logout_sid(current.session_id, sid):
                raise CsrfRejected("logout needs the sid parameter from /bff/user's logout_url")
        target = self.config.server.public_origin + "/"
        if current is not None:
            target = await self._end(current) or target
        if is_post:
            response: Response = JSONResponse({"redirect": target}, headers=NO_STORE)
        else:
            response = RedirectResponse(target, status_code=302, headers=NO_STORE)
        self.cookie.clear(response)
        return response

    async def _end(self, current: CurrentSession) -> str | None:
        session = current.loaded.session
        await self.sessions.delete(current.loaded)
        logger.info("session ended by logout")
        if not self.idp.ready:
            return None
        token = session.tokens.refresh_token
        if token:
            try:
                await self.idp.client.revoke(token, "refresh_token")
            except (OAuthError, ServiceUnavailable) as exc:
                logger.warning("refresh token revocation failed (%s); the session is deleted anyway", exc.error)
        return self.idp.client.end_session_url(
            id_token_hint=session.tokens.id_token,
            post_logout_redirect_uri=self.config.oidc.post_logout_redirect_uri
            or self.config.server.public_origin + "/",
        )
