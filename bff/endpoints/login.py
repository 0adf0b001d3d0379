"""``GET /bff/login?returnTo=/path``: start the authorization code flow with PKCE (RFC 7636, S256), ``state`` and
``nonce`` (RFC 9700 2.1.1, OpenID Connect Core 3.1.2.1).

The login state (state, nonce, code_verifier, returnTo, start time) never enters the store: ``/bff/login`` is
public, and anything it stored would be memory that anyone can fill. It is sealed (AES-256-GCM, ``SessionManager.
logins.seal``) into a login cookie of its own, named after the state: ``{session cookie}-login-{digest(state)}``,
``__Host-``, HttpOnly, ``SameSite=Lax`` (the IdP's redirect back is a cross-site top-level navigation) and
``Max-Age=login_timeout``. So:

* the login is bound to the browser that started it: a callback is honoured only with the cookie of its state,
  which only this browser holds (login CSRF, RFC 9700 4.7);
* several tabs log in side by side, even when they start at the same instant: each login has a cookie of its own,
  and nothing is shared that two answers could overwrite;
* one browser keeps at most ``max_pending_logins`` of them: starting one more drops the oldest (and any that
  expired or do not open), so its cookies stay a few KB;
* the callback consumes the state with a one-time marker in the store (``SessionManager.logins.consume``) and drops
  the cookie, whatever the outcome.

A step-up login (RFC 9470) also carries ``acr_values`` and ``max_age`` (``bff.endpoints.step_up``).

The cookie is encrypted, not just signed: the code_verifier must stay secret (RFC 7636 1) and the nonce unknown
until the ID token returns it.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bff.config import Config
from bff.cookies import clear_cookie, read_cookie, read_cookies_with_prefix, set_cookie
from bff.crypto import digest
from bff.endpoints.common import NO_STORE
from bff.endpoints.step_up import requested_step_up
from bff.errors import InvalidState, LoginExpired
from bff.models import LoginState
from bff.oidc.pkce import new_code_verifier, new_nonce, new_state, s256_challenge
from bff.oidc.provider import IdentityProvider
from bff.return_to import safe_return_to
from bff.session.manager import SessionManager
from bff.types import PATH_PREFIX, Clock

LOGIN_COOKIE_SUFFIX = "-login-"
#: Characters of the state's digest in a login cookie's name (96 bits: names of one browser's logins never clash).
_NAME_DIGEST = 16
#: Longest login cookie value that is opened at all (a sealed login with the longest returnTo is ~3 KB).
MAX_LOGIN_COOKIE = 4096
#: Login cookies one browser keeps together, in characters: the newest login always stays, older ones only within
#: this, so the ``Cookie`` header fits the 8 KB that common proxies allow for one header line.
LOGIN_COOKIES_BUDGET = 6 * 1024
#: A login started up to this far in the future is accepted: the clocks of instances sharing a store differ a little.
_CLOCK_LEEWAY = 60.0


class LoginCookies:
    """The pending logins of a browser, one ``SameSite=Lax`` cookie each."""

    def __init__(self, config: Config, sessions: SessionManager, clock: Clock) -> None:
        self.prefix = config.session.cookie_name + LOGIN_COOKIE_SUFFIX
        self.timeout = config.session.login_timeout
        self.max_pending = config.session.max_pending_logins
        self.sessions = sessions
        self.clock = clock

    def name_for(self, state: str) -> str:
        return self.prefix + digest(state)[:_NAME_DIGEST]

    def issue(self, request: Request, response: Response, login: LoginState) -> None:
        """Add ``login``'s cookie to ``response``, and drop the browser's oldest pending logins beyond the cap, the
        expired ones and any login cookie that does not open."""
        name = self.name_for(login.state)
        sealed = self.sessions.logins.seal(login, name)
        now = self.clock()
        live: list[tuple[float, str, int]] = []
        stale: list[str] = []
        # A browser that keeps to the cap sends at most max_pending of them; a request with more is not a browser
        # of ours, and only a bounded number are looked at.
        for other, value in read_cookies_with_prefix(_cookie_header(request), self.prefix, limit=2 * self.max_pending):
            opened = self._open(other, value)
            if opened is None or not self._live(opened, now):
                stale.append(other)
            else:
                live.append((opened.created_at, other, len(other) + len(value)))
        budget = LOGIN_COOKIES_BUDGET - len(name) - len(sealed)
        kept = 0
        for _, other, size in sorted(live, reverse=True):  # newest first
            if kept < self.max_pending - 1 and size <= budget:
                kept += 1
                budget -= size
            else:
                stale.append(other)
        for other in stale:
            response.headers.append("set-cookie", clear_cookie(other, same_site="lax"))
        response.headers.append("set-cookie", set_cookie(name, sealed, max_age=int(self.timeout), same_site="lax"))

    def read(self, request: Request, state: str) -> LoginState:
        """The pending login of ``state`` that this browser holds, checked; ``InvalidState`` otherwise. The caller
        still has to consume it (``SessionManager.logins.consume``) before acting on it."""
        name = self.name_for(state)
        sealed = read_cookie(_cookie_header(request), name)
        if sealed is None:
            raise InvalidState(
                "this browser has no pending login for this state: it was started in another browser, expired,"
                " was already used, or was dropped for newer logins; start the login again"
            )
        login = self._open(name, sealed)
        if login is None or login.state != state:
            raise InvalidState("the login cookie does not belong to this login (altered, or sealed with a retired key)")
        if not self._live(login, self.clock()):
            raise LoginExpired("the login expired before it finished; start the login again")
        return login

    def clear(self, request: Request, response: Response) -> None:
        """Drop the login cookie of the request's ``state``, if the browser sent one: the callback's login is over."""
        state = request.query_params.get("state")
        if state:
            name = self.name_for(state)
            if read_cookie(_cookie_header(request), name) is not None:
                response.headers.append("set-cookie", clear_cookie(name, same_site="lax"))

    def _open(self, name: str, sealed: str) -> LoginState | None:
        if len(sealed) > MAX_LOGIN_COOKIE:
            return None
        return self.sessions.logins.open(sealed, name)

    def _live(self, login: LoginState, now: float) -> bool:
        return login.created_at - _CLOCK_LEEWAY <= now < login.created_at + self.timeout


def _cookie_header(request: Request) -> str | None:
    # HTTP/2 may split cookies over several fields; they are one list (RFC 9113 8.2.3).
    values = request.headers.getlist("cookie")
    return "; ".join(values) if values else None


class Login:
    def __init__(
        self, config: Config, sessions: SessionManager, idp: IdentityProvider, cookies: LoginCookies, clock: Clock
    ) -> None:
        self.config = config
        self.sessions = sessions
        self.idp = idp
        self.cookies = cookies
        self.clock = clock

    async def handle(self, request: Request) -> Response:
        authorization = self.idp.authorization  # raises NotReady before the IdP metadata is loaded
        step_up = requested_step_up(request, self.config)
        verifier = new_code_verifier()
        login = LoginState(
            state=new_state(),
            nonce=new_nonce(),
            code_verifier=verifier,
            # Under a [[frontends]] path prefix, "/" is another frontend's: the fallback is the prefix's root.
            return_to=safe_return_to(request.query_params.get("returnTo"), request.scope.get(PATH_PREFIX, "") + "/"),
            created_at=self.clock(),
            acr_values=step_up.acr_values,
            max_age=step_up.max_age,
        )
        # With PAR this calls the IdP (RFC 9126): a failed push raises before any cookie is set, so nothing is lost.
        url = await authorization.url(
            state=login.state,
            nonce=login.nonce,
            code_challenge=s256_challenge(verifier),
            redirect_uri=self.config.oidc.redirect_uri,
            extra=step_up.auth_params(),
        )
        response = RedirectResponse(url, status_code=302, headers=NO_STORE)
        self.cookies.issue(request, response, login)
        return response
