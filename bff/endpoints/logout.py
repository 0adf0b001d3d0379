"""``/bff/logout``: end the session here and at the IdP, without ever showing a token to a script.

* ``POST /bff/logout`` with ``X-CSRF: 1`` (XHR requests never get a 302) ends the session at once and answers JSON
  ``{"redirect": url}``. When the IdP has an ``end_session_endpoint``, ``url`` is a same-origin continuation
  ``/bff/logout?handle=...``: an opaque handle, one-time, valid for ``LOGOUT_HANDLE_TTL`` seconds, to the IdP URL
  kept in the store. Otherwise ``url`` is the post-logout page.
* ``GET /bff/logout?handle=...``, the SPA's top-level navigation to that URL, consumes the handle and 302-redirects
  to the IdP's ``end_session_endpoint``. A used, expired or unknown handle gets the HTML error page
  (``logout_expired``): the session here is gone already, the person should know the IdP's may not be.
* ``GET /bff/logout?sid=...`` with the ``sid`` from ``/bff/user``'s ``logout_url`` (the sid proves a same-origin
  script read it: a CSRF guard for a plain link) ends the session and redirects the same way. It may be typed in
  or bookmarked (``Sec-Fetch-Site: none``); a cross-site request is refused.

Ending a session: revoke the refresh token (RFC 7009) when the IdP has a revocation endpoint (a failure is logged
and does not stop the logout), delete the session, clear the cookie. The IdP's URL carries ``id_token_hint`` and
``post_logout_redirect_uri`` (OpenID Connect RP-Initiated Logout 1.0 section 2), so the IdP ends its session
without asking the person to confirm.

Why a handle and not the IdP URL in the JSON: the ID token in ``id_token_hint`` is a credential (a signed
statement of who logged in, accepted as a bearer by careless APIs), and a JSON body is readable by every script on
the page. A ``Location`` header of a top-level navigation is not: both GET forms refuse anything but a top-level
navigation (``bff.proxy.csrf.check_navigation``), since a ``fetch()`` that follows the redirect could read the final URL
when the IdP allows CORS. The alternative, ``client_id`` + ``logout_hint`` without ``id_token_hint``, needs no state
but lets the IdP ask for a confirmation (section 2: the hint is how the IdP knows the logout is genuine) and leaves
the person a click away from staying logged in there. The price of the handle is one store write per logout.
Browsers without Fetch Metadata headers are not checked for the navigation; the handle then only protects against
other pages, not against a script of this origin.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from bff.config import Config
from bff.endpoints.common import NO_STORE, CurrentSession, SessionCookie
from bff.errors import CsrfRejected, LogoutExpired, OAuthError, ServiceUnavailable
from bff.oidc.provider import IdentityProvider
from bff.proxy import check_csrf, check_navigation
from bff.session.manager import SessionManager

logger = logging.getLogger("bff.logout")

#: Seconds a logout continuation URL stays valid: the SPA navigates to it right after the POST.
LOGOUT_HANDLE_TTL = 60.0
#: Handles are 43 characters (256 bits, base64url); a longer parameter is not looked up.
MAX_HANDLE = 64
#: The redirect to the IdP holds the ID token: no Referer of it to the next site (and no cache keeps it).
_REDIRECT_HEADERS = {**NO_STORE, "Referrer-Policy": "no-referrer"}


class Logout:
    def __init__(self, config: Config, sessions: SessionManager, idp: IdentityProvider, cookie: SessionCookie) -> None:
        self.config = config
        self.sessions = sessions
        self.idp = idp
        self.cookie = cookie
        self.home = config.server.public_origin + "/"

    async def handle(self, request: Request) -> Response:
        if request.method == "POST":
            return await self._post(request)
        check_navigation(request.headers, self.config.server.public_origin)
        handle = request.query_params.get("handle")
        if handle is not None:
            return await self._continue(handle)
        current = await self.cookie.current(request, slide=False, strict=False)
        target = self.home
        if current is not None:
            sid = request.query_params.get("sid")
            if not sid or not self.sessions.logouts.check_sid(current.session_id, sid):
                raise CsrfRejected("logout needs the sid parameter from /bff/user's logout_url")
            target = self._end_session_url(current) or target
            await self._end(current)
        else:
            sid = request.query_params.get("sid")
            session_id = self.cookie.session_id(request)
            if sid and session_id is not None and self.sessions.logouts.check_sid(session_id, sid):
                await self._end_unreadable(session_id)
        response = RedirectResponse(target, status_code=302, headers=_REDIRECT_HEADERS)
        self.cookie.clear(response)
        return response

    async def _post(self, request: Request) -> Response:
        check_csrf(request.headers, self.config.server.public_origin)
        current = await self.cookie.current(request, slide=False, strict=False)
        target = self.home
        if current is not None:
            url = self._end_session_url(current)
            if url is not None:
                # Saved before the session is deleted: if the store fails, nothing has changed and a retry works.
                handle = await self.sessions.logouts.save_redirect(url, LOGOUT_HANDLE_TTL)
                target = f"{self.config.server.public_origin}/bff/logout?handle={handle}"
            await self._end(current)
        elif (session_id := self.cookie.session_id(request)) is not None:
            await self._end_unreadable(session_id)
        response = JSONResponse({"redirect": target}, headers=NO_STORE)
        self.cookie.clear(response)
        return response

    async def _continue(self, handle: str) -> Response:
        url = await self.sessions.logouts.take_redirect(handle) if 0 < len(handle) <= MAX_HANDLE else None
        if url is None:
            raise LogoutExpired(
                "this sign-out link was already used or has expired: you are signed out of this application, "
                "but maybe not at the identity provider"
            )
        return RedirectResponse(url, status_code=302, headers=_REDIRECT_HEADERS)

    def _end_session_url(self, current: CurrentSession) -> str | None:
        if not self.idp.ready:
            return None
        return self.idp.client.end_session_url(
            id_token_hint=current.loaded.session.tokens.id_token,
            post_logout_redirect_uri=self.config.oidc.post_logout_redirect_uri or self.home,
        )

    async def _end_unreadable(self, session_id: str) -> None:
        """A validly signed cookie whose record this release cannot read: a newer release may still serve it
        (docs/storage-formats.md), so it is deleted; its tokens are unknown here, so nothing is revoked."""
        if await self.sessions.store.delete(self.sessions.key_for(session_id)):
            logger.info("session ended by logout (its record was unreadable here: tokens not revoked)")

    async def _end(self, current: CurrentSession) -> None:
        await self.sessions.delete(current.loaded, reason="logout")
        logger.info("session ended by logout")
        token = current.loaded.session.tokens.refresh_token
        if token and self.idp.ready:
            try:
                await self.idp.client.revoke(token, "refresh_token")
            except (OAuthError, ServiceUnavailable) as exc:
                logger.warning("refresh token revocation failed (%s); the session is deleted anyway", exc.error)
