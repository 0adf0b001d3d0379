"""``TokenManager``: the only module that joins sessions and OIDC. It answers one question for the proxy: which
bearer token goes with this request, under this route's token policy? And it refreshes tokens so that, with
refresh-token rotation, two requests can never spend the same refresh token (which an IdP with reuse detection
answers by revoking the whole token family, logging the user out: the top complaint about every BFF).

Policies: ``none`` (no token), ``user`` (the session's token; no session -> ``Unauthenticated``), ``user_or_none``
(anonymous without a session), ``client`` (a client-credentials token shared by every session, cached until shortly
before it expires, fetched single-flight). A ``client`` route needs a session like ``user`` unless it says
``anonymous = true``: bff's own token must not be a credential that anyone on the internet can spend. A ``user``
or ``user_or_none`` route with ``exchange`` sends a token the IdP exchanged for the session's (RFC 8693), kept in the
session per route and fetched by the ``Refresher`` like a refresh.

The check runs on every proxied request and stays here, inline: a token that does not expire within
``refresh_leeway`` is sent as it is. The rest is delegated to one object per job: ``Refresher`` (``refresh``: the
single-flight refresh with the store lock and its lease), which owns the ``IdPProbe`` (``idp_probe``: fail fast
while the IdP is down), and ``ClientCredentials`` (``client_credentials``: bff's own tokens). While a session's
access token is still valid, a failed proactive refresh does not fail the request: the current token is used.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from bff.config import RouteSettings, TokenSettings
from bff.cookies import read_cookie
from bff.errors import (
    BffError,
    IdPUnavailable,
    InvalidGrant,
    SessionExpired,
    SessionFormatUnsupported,
    SubjectChanged,
    TokenExchangeDenied,
    TokenExchangeRefused,
    Unauthenticated,
)
from bff.oidc.provider import IdentityProvider
from bff.session.manager import LoadedSession, SessionManager
from bff.telemetry.exchange import EXCHANGE, Exchange
from bff.telemetry.spans import Spans
from bff.tokens.client_credentials import ClientCredentials
from bff.tokens.refresh import STOP_GRACE, Refresher
from bff.tokens.route_tokens import expired, expiring, tokens_for
from bff.types import Clock, Scope, system_clock

#: On shutdown, how long refreshes in flight may still run, so that tokens the IdP already rotated get stored.
SHUTDOWN_GRACE = 5.0


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
        settings: TokenSettings | None = None,
        clock: Clock = system_clock,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        spans: Spans | None = None,
        dpop: bool = False,
    ) -> None:
        self.sessions = sessions
        #: ``[oidc] dpop``: a session's unbound token (from before DPoP was turned on) is refreshed before use.
        self._dpop = dpop
        self.idp = idp
        self.cookie_name = cookie_name
        self.settings = settings or TokenSettings()
        self.clock = clock
        self._refresher = Refresher(sessions, idp, self.settings, clock=clock, sleep=sleep)
        self._client_credentials = ClientCredentials(idp, self.settings, clock)
        self._spans = spans
        #: Refresh one session single-flight: ``Refresher.refresh`` itself, no wrapper in between (one that records
        #: a span only when tracing is on).
        self.refresh = self._refresher.refresh if spans is None else self._traced_refresh
        #: bff's own client-credentials token for a ``client`` route: ``ClientCredentials.token``.
        self.client_token = self._client_credentials.token

    @property
    def refresh_count(self) -> int:
        """Refresh calls this process made to the IdP (for the demo SPA's "refreshed" indicator and tests)."""
        return self._refresher.refresh_count

    # --- BearerProvider (bff.proxy) ------------------------------------------------------------------------------

    async def session_for(self, scope: Scope) -> LoadedSession | None:
        session_id = self.sessions.session_id_from_cookie(read_cookie(cookie_header(scope), self.cookie_name))
        if session_id is None:
            return None
        loaded = await self.sessions.load(session_id, slide=True)
        if loaded is not None:
            exchange: Exchange | None = scope.get(EXCHANGE)
            if exchange is not None:  # observed: the access log names the session by a hash of its key
                exchange.session_key = loaded.key
        return loaded

    async def bearer(self, scope: Scope, route: RouteSettings) -> str | None:
        if route.token == "none":
            return None
        if route.token == "client":
            if not route.anonymous and await self.session_for(scope) is None:
                raise Unauthenticated("no session; log in at /bff/login (this route is not anonymous)")
            return await self.client_token(route)
        loaded = await self.session_for(scope)
        if loaded is None:
            if route.token == "user_or_none":
                return None
            raise Unauthenticated("no session; log in at /bff/login")
        return await self.access_token(loaded, route)

    async def refresh_bearer(self, scope: Scope, route: RouteSettings, rejected: str) -> str | None:
        """After an upstream 401 to ``rejected``: a fresh token, or None when there is nothing better to send."""
        if route.token == "client":
            self._client_credentials.forget(route, rejected)
            return await self.client_token(route)
        loaded = await self.session_for(scope)
        if loaded is None:
            return None
        current = tokens_for(loaded, route)
        if current is not None and current.access_token != rejected:
            return current.access_token  # someone refreshed since this request read the session
        refreshed = await self.refresh(loaded, route, stale_access_token=rejected)
        fresh = tokens_for(refreshed, route)
        return None if fresh is None or fresh.access_token == rejected else fresh.access_token

    # --- SocketSessions (bff.proxy.websocket) ----------------------------------------------------------------------

    @property
    def acr_values_allowed(self) -> tuple[str, ...]:
        """``[oidc] acr_values_allowed``: the step-up challenges of a WebSocket handshake bff turns into a login."""
        return self.idp.settings.acr_values_allowed

    async def open_socket(self, scope: Scope, route: RouteSettings) -> tuple[str | None, str | None]:
        """The handshake's token under the route's policy, and the session the socket lives on (watched), if any."""
        token = await self.bearer(scope, route)
        if route.token == "none" or (route.token == "client" and route.anonymous) or token is None:
            return token, None
        return token, self.sessions.session_id_from_cookie(read_cookie(cookie_header(scope), self.cookie_name))

    async def socket_session_alive(self, session_id: str, route: RouteSettings) -> bool:
        """False once the session is gone, or its token expired and cannot be refreshed. A token about to expire
        is refreshed as on HTTP routes, so the session lives on; the open socket keeps its handshake token."""
        loaded = await self.sessions.load(session_id, slide=False)
        if loaded is None:
            return False
        if route.token not in ("user", "user_or_none"):
            return True
        tokens = tokens_for(loaded, route)
        if tokens is not None and not expiring(tokens, self.settings.refresh_leeway, self.clock):
            return True
        try:
            await self.access_token(loaded, route)
        except SessionFormatUnsupported:
            raise  # a newer release's record: not an end, the caller keeps the socket
        except SessionExpired:
            return False
        except BffError:
            return tokens is not None and not expired(tokens, self.clock)
        return True

    # --- user tokens ---------------------------------------------------------------------------------------------

    async def access_token(self, loaded: LoadedSession, route: RouteSettings | None = None) -> str:
        """A valid access token for this session (and route), refreshing it first when it expires soon."""
        tokens = tokens_for(loaded, route)
        if (
            tokens is not None
            and not expiring(tokens, self.settings.refresh_leeway, self.clock)
            and (not self._dpop or tokens.token_type == "DPoP" or (route is not None and route.dpop is False))
        ):
            return tokens.access_token
        try:
            refreshed = await self.refresh(loaded, route, stale_access_token=tokens.access_token if tokens else None)
        except IdPUnavailable:
            if tokens is not None and not expired(tokens, self.clock):
                # Proactive refresh failed but the token still works: use it rather than fail the request.
                return tokens.access_token
            raise
        fresh = tokens_for(refreshed, route)
        assert fresh is not None  # refresh() stores the route's token or raises
        return fresh.access_token

    async def _traced_refresh(
        self, loaded: LoadedSession, route: RouteSettings | None = None, *, stale_access_token: str | None
    ) -> LoadedSession:
        """``Refresher.refresh`` inside a ``token refresh`` span that records its outcome (``bff.refresh.outcome``).
        The refresh task copies this context, so the IdP and store calls it makes are the span's children."""
        assert self._spans is not None
        joined = self._refresher.joins(loaded, route)
        # A route's token exchange (RFC 8693) runs through the same flight; its span says which it was.
        exchanging = route is not None and route.exchange is not None
        name, attribute = (
            ("token exchange", "bff.exchange.outcome") if exchanging else ("token refresh", "bff.refresh.outcome")
        )
        with self._spans.span(name, "internal") as span:
            try:
                refreshed = await self._refresher.refresh(loaded, route, stale_access_token=stale_access_token)
            except BaseException as exc:
                span.set(attribute, exchange_outcome(exc) if exchanging else refresh_outcome(exc))
                raise
            span.set(attribute, "joined" if joined else "ok")
            return refreshed

    async def aclose(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Shutdown: give refreshes in flight up to ``grace`` seconds to store what the IdP answered, then stop them
        (each releases its store lock as it ends) and the probe. A write of rotated tokens already under way is not
        stopped: it gets until its refresh deadline. Bounded: nothing here waits on a cancellation being
        honoured."""
        probe = self._refresher.probe
        probe.close()
        flights = self._refresher.in_flight()
        if flights:
            await asyncio.wait(flights, timeout=grace)
        tasks: list[asyncio.Task[LoadedSession] | asyncio.Task[None]] = [
            task for task in (*flights, probe.task) if task is not None and not task.done()
        ]
        for task in tasks:
            task.cancel()
        # The IdP has spent the refresh tokens these writes store: they go on to their deadline (RFC 9700 4.14.2).
        storing = self._refresher.storing()
        if tasks or storing:
            last = max(storing.values(), default=0.0) - asyncio.get_running_loop().time()
            await asyncio.wait([*tasks, *storing], timeout=max(STOP_GRACE, last))


def exchange_outcome(exc: BaseException) -> str:
    """The outcome of a failed token exchange, from the closed set of ``bff.exchange.outcome``
    (``bff_token_exchange_total``'s)."""
    if isinstance(exc, TokenExchangeDenied):
        return "denied"
    if isinstance(exc, TokenExchangeRefused):
        return "refused"
    if isinstance(exc, IdPUnavailable):
        return "idp_unavailable"
    return "error"


def refresh_outcome(exc: BaseException) -> str:
    """The outcome of a failed refresh, from the closed set of ``bff.refresh.outcome`` (TELEMETRY.md)."""
    if isinstance(exc, IdPUnavailable):
        return "idp_unavailable"
    if isinstance(exc, SessionExpired) and isinstance(exc.__cause__, InvalidGrant):
        return "invalid_grant"
    if isinstance(exc, SubjectChanged):
        return "sub_mismatch"
    return "error"
