"""TokenManagers against a real test OpenID Provider over HTTP, in the test's own event loop.

Several TokenManagers on one store stand for several bff processes: each has its own in-process single-flight
state, so only the store lock stands between them and a double refresh.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import httpx

from bff.config import TokenSettings
from bff.idp_http import create_idp_client
from bff.oidc.pkce import new_code_verifier, new_nonce, new_state, s256_challenge
from bff.oidc.provider import IdentityProvider
from bff.session.manager import LoadedSession, SessionManager
from bff.session.store import SessionStore
from bff.tokens import TokenManager
from tests.support.configs import make_config
from tests.support.oidc_provider import TestProvider
from tests.support.sessions import expire_access_token

REDIRECT_URI = "https://app.example.com/bff/callback"


@dataclass
class TokenEnv:
    provider: TestProvider
    sessions: SessionManager
    idps: list[IdentityProvider] = field(default_factory=list)
    clients: list[httpx.AsyncClient] = field(default_factory=list)
    managers: list[TokenManager] = field(default_factory=list)

    async def manager(self, settings: TokenSettings | None = None, *, oidc_timeout: float = 10) -> TokenManager:
        """A TokenManager with its own IdP client: one more 'process'. ``oidc_timeout`` is its ``[oidc] timeout``
        (how long a request waits for the IdP)."""
        config = make_config(issuer=self.provider.issuer)
        oidc = dataclasses.replace(config.oidc, timeout=oidc_timeout)
        http = create_idp_client(timeout=oidc_timeout)
        idp = IdentityProvider(oidc, http)
        await idp.load()
        self.clients.append(http)
        self.idps.append(idp)
        manager = TokenManager(self.sessions, idp, cookie_name="__Host-bff", settings=settings)
        self.managers.append(manager)
        return manager

    async def login(self, user: str = "alice") -> tuple[str, LoadedSession]:
        """A real code flow against the provider; returns the new session's id and its stored state."""
        idp = self.idps[0] if self.idps else None
        if idp is None:
            await self.manager()
            idp = self.idps[0]
        self.provider.login_as = user
        verifier, nonce = new_code_verifier(), new_nonce()
        url = await idp.authorization.url(
            state=new_state(), nonce=nonce, code_challenge=s256_challenge(verifier), redirect_uri=REDIRECT_URI
        )
        answer = await self.clients[0].get(url)
        code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
        tokens = await idp.client.exchange_code(code, verifier, REDIRECT_URI)
        claims = await idp.validate_id_token(tokens.id_token or "", nonce=nonce, access_token=tokens.access_token)
        session_id, _ = await self.sessions.create(sub=claims["sub"], sid=claims.get("sid"), claims={}, tokens=tokens)
        loaded = await self.sessions.load(session_id)
        assert loaded is not None
        return session_id, loaded

    async def expire_access_token(self, session_id: str) -> LoadedSession:
        return await expire_access_token(self.sessions, session_id)

    async def expired_login(self, user: str = "alice") -> tuple[str, LoadedSession]:
        """``login``, then ``expire_access_token``: returns the session's id and the stale session as stored.

        Only the stored access token's ``expires_at`` is in the past; its refresh and ID tokens are as issued and
        unspent, nothing was refreshed, and no clock moved (the provider's included). Makes a first manager if there
        is none yet, as ``login`` does."""
        session_id, _ = await self.login(user)
        return session_id, await self.expire_access_token(session_id)


@contextlib.asynccontextmanager
async def token_env(provider: TestProvider, store: SessionStore) -> AsyncIterator[TokenEnv]:
    config = make_config()
    env = TokenEnv(provider=provider, sessions=SessionManager(store, config.session))
    try:
        yield env
    finally:
        for manager in env.managers:
            await manager.aclose()
        for client in env.clients:
            await client.aclose()
