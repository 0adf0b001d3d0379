"""``TokenManager``: the only module that joins sessions and OIDC. It answers one question for the proxy: which
bearer token goes with this request, under this route's token policy?

* ``none``: no token.
* ``user``: the session's access token; no session -> ``Unauthenticated``.
* ``user_or_none``: the session's access token, or anonymous when there is no session.
* ``client``: a client-credentials token, shared by every session, cached until shortly before it expires, and
  fetched single-flight (concurrent requests wait for one IdP call).
"""

from __future__ import annotations

import asyncio
import logging

from bff.config import RouteSettings
from bff.cookies import read_cookie
from bff.errors import Unauthenticated
from bff.models import TokenSet
from bff.oidc.provider import IdentityProvider
from bff.session.manager import LoadedSession, SessionManager
from bff.types import Clock, Scope, system_clock

logger = logging.getLogger("bff.tokens")

DEFAULT_LEEWAY = 30.0


def cookie_header(scope: Scope) -> str | None:
    values = [v.decode("latin-1") for k, v in scope["headers"] if k == b"cookie"]
    return "; ".join(values) if values else None


class TokenManager:
    def __init__(
        self,
        sessions: SessionManager,
        idp: IdentityProvider,
        *,
        cookie_name: str,
        clock: Clock = system_clock,
        leeway: float = DEFAULT_LEEWAY,
    ) -> None:
        self.sessions = sessions
        self.idp = idp
        self.cookie_name = cookie_name
        self.clock = clock
        self.leeway = leeway
        self._client_tokens: dict[tuple[str | None, tuple[str, ...]], TokenSet] = {}
        self._client_locks: dict[tuple[str | None, tuple[str, ...]], asyncio.Lock] = {}

    async def session_for(self, scope: Scope) -> LoadedSession | None:
        session_id = self.sessions.session_id_from_cookie(read_cookie(cookie_header(scope), self.cookie_name))
        if session_id is None:
            return None
        return await self.sessions.load(session_id, slide=True)

    # --- BearerProvider (bff.proxy) ------------------------------------------------------------------------------

    async def bearer(self, scope: Scope, route: RouteSettings) -> str | None:
        if route.token == "none":
            return None
        if route.token == "client":
            return await self.client_token(route)
        loaded = await self.session_for(scope)
        if loaded is None:
            if route.token == "user_or_none":
                return None
            raise Unauthenticated("no session; log in at /bff/login")
        return await self.access_token(loaded, route)

    async def refresh_bearer(self, scope: Scope, route: RouteSettings, rejected: str) -> str | None:
        """After an upstream 401: a client token is dropped from the cache and fetched again once."""
        if route.token == "client":
            key = (route.resource, route.scopes)
            cached = self._client_tokens.get(key)
            if cached is not None and cached.access_token == rejected:
                del self._client_tokens[key]
            return await self.client_token(route)
        return None

    async def access_token(self, loaded: LoadedSession, route: RouteSettings) -> str:
        return loaded.session.tokens.access_token

    async def client_token(self, route: RouteSettings) -> str:
        key = (route.resource, route.scopes)
        cached = self._client_tokens.get(key)
        if cached is not None and not self._expiring(cached):
            return cached.access_token
        lock = self._client_locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._client_tokens.get(key)  # another task may have fetched it while we waited
            if cached is not None and not self._expiring(cached):
                return cached.access_token
            tokens = await self.idp.client.client_credentials(scopes=route.scopes, resource=route.resource)
            self._client_tokens[key] = tokens
            return tokens.access_token

    def _expiring(self, tokens: TokenSet) -> bool:
        return tokens.expires_at is not None and tokens.expires_at - self.leeway <= self.clock()
