"""``/authorize`` and the login form: authenticate the user, then let authlib answer the client.

1. ``GET /authorize`` (or ``POST``, Core 3.1.2.1): authlib validates the request. If the client or its
   ``redirect_uri`` is unknown, the browser gets an error page and is never redirected (RFC 6749 4.1.2.1); any
   other error is redirected to the client with ``error``, ``state`` and ``iss``.
2. A live IdP session (within ``max_age``, at the level ``acr_values`` asks for, and no ``prompt=login``) skips the
   form: single sign-on. ``acr_values`` with ``urn:bff:acr:mfa`` adds the second factor to the form (``acr``).
   There is no consent step: every registered client is first-party here.
3. Otherwise the login form is shown. It belongs to a *login transaction* stored server-side with the authorization
   request's parameters and bound to the browser (``devidp_browser`` cookie), so the form only works once, and only
   in the browser it was shown to: that is its CSRF protection (a forged POST from another site lacks the
   transaction of the victim's browser; one with the attacker's own transaction lacks the binding).
4. ``POST /login`` checks the password, starts an IdP session (cookie ``devidp_session``), re-validates the stored
   authorization request with authlib and redirects to the client with ``code``, ``state`` and ``iss`` (RFC 9207).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence

from authlib.oauth2.rfc6749 import OAuth2Error
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bff.types import Clock
from bff_devtools.acr import ACR_MFA, DEMO_OTP, check_otp, requested_acr, satisfies
from bff_devtools.devidp.accounts import Accounts
from bff_devtools.devidp.issuer import Subject
from bff_devtools.devidp.oauth import ConsentGrant, DevAuthorizationServer, HttpRequest, read_form, run_in_thread
from bff_devtools.devidp.pages import error_page, login_page
from bff_devtools.devidp.par import PushedRequests, RequestRefused
from bff_devtools.devidp.records import BrowserSession
from bff_devtools.devidp.sessions import BrowserSessions
from bff_devtools.devidp.settings import DevIdPSettings
from bff_devtools.devidp.storage import LoginTransactions

logger = logging.getLogger("bff_devtools.devidp.login")

_MAX_FIELD = 1024


class LoginFlow:
    def __init__(
        self,
        settings: DevIdPSettings,
        server: DevAuthorizationServer,
        *,
        sessions: BrowserSessions,
        logins: LoginTransactions,
        accounts: Accounts,
        pushed: PushedRequests,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._server = server
        self._sessions = sessions
        self._logins = logins
        self._accounts = accounts
        self._pushed = pushed
        self._clock = clock

    async def authorize(self, request: Request) -> Response:
        """``GET`` or ``POST /authorize`` (OpenID Connect Core 3.1.2)."""
        http = await HttpRequest.read(request, issuer=self._settings.issuer)
        try:  # a pushed request_uri (RFC 9126 4) or a request object (RFC 9101) stands for the real parameters
            params = await self._pushed.expand(http.params)
        except RequestRefused as refused:
            logger.info("authorization request refused: %s", refused.error)
            return error_page(refused.description, error=refused.error)
        if params != list(http.params):
            http = HttpRequest.authorization(self._settings.issuer, params)
        session = await self._session_within_max_age(request, http)
        if session is not None and not satisfies(session.acr, requested_acr(http.params)):
            session = None  # a step-up (RFC 9470): the session's login is not strong enough
        try:
            consent = await run_in_thread(self._server.consent_grant, http, session)
        except OAuth2Error as error:
            return await self._error(http, error)
        if session is None or consent.needs_login:
            return await self.form(request, params=http.params, client_id=consent.client_id)
        return await self._answer(consent, session)

    async def submit(self, request: Request) -> Response:
        """``POST /login``: the login form."""
        fields = {k: v[:_MAX_FIELD] for k, v in await read_form(request)}
        tx = fields.get("tx", "")
        transaction = await self._logins.get(tx, self._sessions.browser_id(request)) if tx else None
        if transaction is None:
            return error_page(
                "This sign-in form has expired, was used already, or was opened in another browser. "
                "Start the sign-in again from the application.",
                status=403,
            )
        user = await self._accounts.authenticate(fields.get("username", ""), fields.get("password", ""))
        client_id = dict(transaction.params or []).get("client_id")
        acr = requested_acr(transaction.params)
        if user is None:
            logger.info("failed login for client %s", client_id or "(admin)")
            return await self._login_page(tx, client_id, acr, error="Wrong username or password.", status=401)
        if acr == ACR_MFA and not check_otp(fields.get("otp", "")):
            logger.info("failed second factor for client %s", client_id)
            return await self._login_page(tx, client_id, acr, error="Wrong one-time code.", status=401)
        if not await self._logins.finish(tx):
            return error_page("This sign-in form was submitted already.", status=403)
        session, cookie = await self._sessions.create(user, acr=acr)
        logger.info("user %s signed in (sid %s)", user.username, session.sid)
        if transaction.params is None:  # the login guarded the admin page
            response: Response = RedirectResponse("/admin", status_code=303)
        else:
            http = HttpRequest.authorization(self._settings.issuer, transaction.params)
            try:
                consent = await run_in_thread(self._server.consent_grant, http, session)
                response = await self._answer(consent, session)
            except OAuth2Error as error:
                response = await self._error(http, error)
        self._sessions.set_session_cookie(response, cookie)
        return response

    async def form(
        self, request: Request, *, params: Sequence[tuple[str, str]] | None, client_id: str | None
    ) -> Response:
        """A login form in a new transaction for this browser (``params`` None: for the admin page)."""
        browser = self._sessions.browser_id(request)
        new_browser = browser is None
        if browser is None:
            browser = secrets.token_urlsafe(32)
        tx = await self._logins.start(browser, None if params is None else list(params))
        response = await self._login_page(tx, client_id, requested_acr(params))
        if new_browser:
            self._sessions.set_browser_cookie(response, browser)
        return response

    async def _login_page(
        self, tx: str, client_id: str | None, acr: str, *, error: str | None = None, status: int = 200
    ) -> Response:
        users = self._settings.users if self._settings.demo_mode else ()
        changed = [u.username for u in users if await self._accounts.password_changed(u.username)]
        otp = None if acr != ACR_MFA else (DEMO_OTP if self._settings.demo_mode else "")
        return login_page(
            tx=tx, client_id=client_id, demo_users=users, changed=changed, error=error, status=status, otp=otp
        )

    async def _answer(self, consent: ConsentGrant, session: BrowserSession) -> Response:
        user = self._settings.user(session.username)
        if user is None:  # pragma: no cover - sessions are only created for configured users
            raise RuntimeError("the session's user is not configured")
        subject = Subject(user, session.sid, session.auth_time, session.acr)
        response = await run_in_thread(self._server.authorization_response, consent, subject)
        return response.to_starlette()

    async def _error(self, http: HttpRequest, error: OAuth2Error) -> Response:
        if error.redirect_uri:
            response = await run_in_thread(self._server.authorization_error, http, error)
            return response.to_starlette()
        logger.info("authorization request refused without redirect: %s", error.error)
        return error_page(str(error.description or error.error), error=str(error.error))

    async def _session_within_max_age(self, request: Request, http: HttpRequest) -> BrowserSession | None:
        """The IdP session, unless the client's ``max_age`` (Core 3.1.2.1) says it is too old to use."""
        session = await self._sessions.current(request)
        max_age = dict(http.params).get("max_age", "")
        # Core 3.1.2.1: "max_age=0 is equivalent to prompt=login".
        if (
            session is not None
            and max_age.isdigit()
            and (int(max_age) == 0 or self._clock() - session.auth_time > int(max_age))
        ):
            return None
        return session
