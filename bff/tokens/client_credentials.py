"""``ClientCredentials``: bff's own access tokens for ``token = "client"`` routes (RFC 6749 4.4).

One token per (resource, scopes), shared by every session, cached until ``refresh_leeway`` before it expires and
fetched single-flight: concurrent requests wait on one lock per key and the first fetches (checked again under the
lock, as a user token's refresh is). After an upstream 401 the rejected token is forgotten, so the next request
fetches a new one; a token that another request has already replaced is left alone.
"""

from __future__ import annotations

import asyncio

from bff.config import RouteSettings, TokenSettings
from bff.models import TokenSet
from bff.oidc.provider import IdentityProvider
from bff.tokens.route_tokens import expiring
from bff.types import Clock

RouteKey = tuple[str | None, tuple[str, ...]]


class ClientCredentials:
    def __init__(self, idp: IdentityProvider, settings: TokenSettings, clock: Clock) -> None:
        self.idp = idp
        self.settings = settings
        self.clock = clock
        self._tokens: dict[RouteKey, TokenSet] = {}
        self._locks: dict[RouteKey, asyncio.Lock] = {}

    async def token(self, route: RouteSettings) -> str:
        key = (route.resource, route.scopes)
        cached = self._tokens.get(key)
        if cached is not None and not expiring(cached, self.settings.refresh_leeway, self.clock):
            return cached.access_token
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(key)  # another task may have fetched it while we waited
            if cached is not None and not expiring(cached, self.settings.refresh_leeway, self.clock):
                return cached.access_token
            tokens = await self.idp.client.client_credentials(scopes=route.scopes, resource=route.resource)
            self._tokens[key] = tokens
            return tokens.access_token

    def forget(self, route: RouteSettings, rejected: str) -> None:
        """The upstream refused ``rejected``: drop it from the cache, unless it was replaced already."""
        key = (route.resource, route.scopes)
        cached = self._tokens.get(key)
        if cached is not None and cached.access_token == rejected:
            del self._tokens[key]
