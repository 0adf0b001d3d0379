"""``GET /bff/login?returnTo=/path``: start the authorization code flow with PKCE (RFC 7636, S256), ``state`` and
``nonce`` (RFC 9700 2.1.1, OpenID Connect Core 3.1.2.1).

The login state (state, nonce, code_verifier, returnTo) lives in the store for ``login_timeout``, consumed once by
the callback. It is bound to this browser by the login cookie: a random value, signed, whose hash the state records.
Every tab reuses the same binding value, so several tabs can log in at once; an attacker who injects their own
``code``/``state`` into a victim's browser fails the binding check (login CSRF, RFC 9700 4.7).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bff.config import Config
from bff.cookies import LOGIN_SALT, CookieSigner, read_cookie, set_cookie
from bff.crypto import digest, random_id
from bff.endpoints.common import NO_STORE
from bff.models import LoginState
from bff.oidc.pkce import new_code_verifier, new_nonce, new_state, s256_challenge
from bff.oidc.provider import IdentityProvider
from bff.redirects import safe_return_to
from bff.session.manager import SessionManager
from bff.types import Clock

LOGIN_COOKIE_SUFFIX = "-login"


class LoginBinding:
    """The login cookie: ``{session cookie name}-login``, SameSite=Lax so it survives the IdP's redirect back."""

    def __init__(self, config: Config) -> None:
        self.name = config.session.cookie_name + LOGIN_COOKIE_SUFFIX
        self.max_age = int(config.session.login_timeout)
        self._signer = CookieSigner([k.reveal() for k in config.session.keys], LOGIN_SALT)

    def read(self, request: Request) -> str | None:
        return self._signer.unsign(read_cookie(request.headers.get("cookie"), self.name))

    def issue(self, response: Response, value: str) -> None:
        response.headers.append(
            "set-cookie", set_cookie(self.name, self._signer.sign(value), max_age=self.max_age, same_site="lax")
        )


class Login:
    def __init__(
        self, config: Config, sessions: SessionManager, idp: IdentityProvider, binding: LoginBinding, clock: Clock
    ) -> None:
        self.config = config
        self.sessions = sessions
        self.idp = idp
        self.binding = binding
        self.clock = clock

    async def handle(self, request: Request) -> Response:
        client = self.idp.client  # raises NotReady before the IdP metadata is loaded
        return_to = safe_return_to(request.query_params.get("returnTo"))
        binding = self.binding.read(request) or random_id(32)
        verifier = new_code_verifier()
        login = LoginState(
            state=new_state(),
            nonce=new_nonce(),
            code_verifier=verifier,
            return_to=return_to,
            binding=digest(binding),
            created_at=self.clock(),
        )
        await self.sessions.save_login(login)
        url = client.authorization_url(
            state=login.state,
            nonce=login.nonce,
            code_challenge=s256_challenge(verifier),
            redirect_uri=self.config.oidc.redirect_uri,
        )
        response = RedirectResponse(url, status_code=302, headers=NO_STORE)
        self.binding.issue(response, binding)
        return response
