"""``Exchanger``: a route's token exchanged (RFC 8693) inside the session's refresh flight.

A route with ``exchange`` gets its token through the same flight as a refresh (``bff.tokens.refresh``), keyed by the
route: the same lock (one flight per session at a time across instances), reload-and-recheck and compare-and-set.
Under the lock the login's token is refreshed and stored first when it expires soon, then exchanged, and a second
write stores the exchanged token. The IdP has spent the old refresh token once it answered: with the new one stored
before the exchange, neither a failed exchange (refused, or the IdP failing) nor a cancelled one (a shutdown) can
lose it (RFC 9700 4.14.2), and the shutdown never waits for an exchange. A refused exchange
(``TokenExchangeRefused``) never ends the session: the refusal is about this route's exchange.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from bff.config import RouteSettings
from bff.errors import IdPUnavailable, SessionExpired, TokenExchangeDenied, TokenExchangeRefused
from bff.models import Session, TokenSet
from bff.session.manager import LoadedSession
from bff.telemetry import metrics
from bff.tokens.flight import FlightContext, RefreshOutcome, call_token_endpoint
from bff.tokens.route_tokens import expired, expiring
from bff.types import Clock

logger = logging.getLogger("bff.tokens")

_OUTCOMES = {outcome: metrics.TOKEN_EXCHANGE.labels(outcome=outcome) for outcome in metrics.EXCHANGE_OUTCOMES}


class Exchanger:
    def __init__(self, context: FlightContext, *, clock: Clock) -> None:
        self.context = context
        self.clock = clock
        #: Token exchanges (RFC 8693) this process made at the IdP.
        self.exchange_count = 0

    async def exchanged(
        self,
        current: LoadedSession,
        route: RouteSettings,
        route_key: str,
        refresh_login: Callable[[LoadedSession], Awaitable[LoadedSession]],
    ) -> tuple[LoadedSession, Session]:
        """The route's token exchanged (RFC 8693) for the session's current access token, refreshed and stored
        first (by ``refresh_login``) when it expires soon, under the same lock. Returns the session as stored and
        the session with the exchanged token, for the caller to store."""
        tokens = current.session.tokens
        if expiring(tokens, self.context.settings.refresh_leeway, self.clock):
            if tokens.refresh_token:
                current = await refresh_login(current)
            elif expired(tokens, self.clock):
                await self.context.sessions.delete(current, reason="expired")
                raise SessionExpired("the access token expired and the session has no refresh token")
        session = current.session
        exchanged = await self._call_exchange(session.tokens.access_token, route)
        return current, session.evolve(route_tokens={**session.route_tokens, route_key: exchanged})

    async def _call_exchange(self, subject_token: str, route: RouteSettings) -> TokenSet:
        exchange = route.exchange
        assert exchange is not None
        timeout = self.context.refresh_timeout
        try:
            new = await call_token_endpoint(
                self.context.probe,
                "token-exchange",
                timeout,
                lambda: self.context.idp.client.token_exchange(
                    subject_token,
                    audience=exchange.audience,
                    resource=exchange.resource,
                    scope=exchange.scope,
                    io_timeout=timeout,
                ),
                what="token exchanges",
            )
        except IdPUnavailable as exc:
            logger.warning("token exchange for route %s failed, keeping the session: %s", route.path, exc.message)
            raise
        except TokenExchangeRefused as exc:
            # Not the session's end: the refusal is about this route's exchange (see bff.errors).
            logger.warning(
                "the identity provider refused the token exchange for route %s: %s", route.path, exc.oauth_error
            )
            raise
        self.exchange_count += 1
        return new


def count_exchange(outcome: RefreshOutcome, refusal: TokenExchangeRefused | None) -> None:
    """Count one request's exchange flight in ``bff_token_exchange_total``, by what it got."""
    if refusal is not None:
        label = "denied" if isinstance(refusal, TokenExchangeDenied) else "refused"
    else:
        label = outcome if outcome in ("ok", "joined", "idp_unavailable") else "error"
    _OUTCOMES[label].inc()
