"""Which of a session's token sets a route uses, and when a token set is due for refresh.

A route that names a ``resource`` (RFC 8707) or its own ``scopes`` gets an access token of its own, kept in the
session's ``route_tokens`` under ``route_token_key``; so does a route with ``exchange`` (RFC 8693), keyed by its
path too, so that no other route, even one exchanging for the same audience, is ever sent its token. Every other
route uses the login's access token. Plain
functions with no state: the per-request check in ``TokenManager.access_token`` calls them directly.
"""

from __future__ import annotations

from bff.config import RouteSettings
from bff.models import TokenSet
from bff.session.manager import LoadedSession
from bff.types import Clock


def route_token_key(route: RouteSettings) -> str | None:
    """Where a route's own token lives in the session; None for routes that use the login's access token."""
    exchange = route.exchange
    if exchange is not None:
        # Never an RFC 8707 key: those start with the resource's URL or "|".
        return f"exchange {route.path}|{exchange.audience or ''}|{exchange.resource or ''}|{exchange.scope or ''}"
    if route.resource is None and not route.scopes:
        return None
    return f"{route.resource or ''}|{' '.join(sorted(route.scopes))}"


def tokens_for(loaded: LoadedSession, route: RouteSettings | None) -> TokenSet | None:
    """The token set that ``route`` sends from this session (None: the route's own token was never fetched)."""
    key = route_token_key(route) if route is not None else None
    if key is None:
        return loaded.session.tokens
    return loaded.session.route_tokens.get(key)


def expiring(tokens: TokenSet, leeway: float, clock: Clock) -> bool:
    """True when ``tokens`` expire within ``leeway`` seconds: refreshed proactively, before the upstream says 401."""
    return tokens.expires_at is not None and tokens.expires_at - leeway <= clock()


def expired(tokens: TokenSet, clock: Clock) -> bool:
    return tokens.expires_at is not None and tokens.expires_at <= clock()
