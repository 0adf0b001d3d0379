"""``create_devidp_app``: the composition root of the development IdP. Picks the store, builds the services and
the routes (declared as data), and owns the lifespan.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bff.errors import ConfigError, SessionStoreUnavailable
from bff.session.memory_store import MemoryStore
from bff.session.redis_store import RedisStore
from bff.session.store import SessionStore
from bff.types import Clock, system_clock
from bff_devtools.devidp.accounts import Accounts
from bff_devtools.devidp.admin import AdminPages
from bff_devtools.devidp.backchannel import BackchannelNotifier
from bff_devtools.devidp.endpoints import ProtocolEndpoints
from bff_devtools.devidp.families import TokenFamilies
from bff_devtools.devidp.grants import register_grants
from bff_devtools.devidp.issuer import IdPServices, TokenIssuer
from bff_devtools.devidp.keys import KeyRing
from bff_devtools.devidp.login import LoginFlow
from bff_devtools.devidp.minter import TokenMinter
from bff_devtools.devidp.oauth import DevAuthorizationServer
from bff_devtools.devidp.pages import BANNER
from bff_devtools.devidp.par import PushedRequests
from bff_devtools.devidp.sessions import BrowserSessions
from bff_devtools.devidp.settings import DevIdPSettings
from bff_devtools.devidp.storage import AuthorizationCodes, Blocklist, LoginTransactions

logger = logging.getLogger("bff_devtools.devidp")


def create_store(settings: DevIdPSettings, *, clock: Clock = system_clock) -> SessionStore:
    """The IdP's store: the same choices as bff's ``[session] store``."""
    if urlsplit(settings.store_url).scheme == "memory":
        return MemoryStore(clock=clock)
    try:
        return RedisStore.from_url(settings.store_url, prefix=settings.store_prefix)
    except ValueError as exc:
        raise ConfigError([f"store_url: {exc}"]) from exc


def create_devidp_app(
    settings: DevIdPSettings, *, store: SessionStore | None = None, clock: Clock = system_clock
) -> Starlette:
    """The IdP as an ASGI app. The signing keys are loaded here (generated the first time), so a bad key file is a
    ``ConfigError`` before anything serves. ``store`` defaults to one built from ``settings.store_url``, closed by
    the lifespan; a store passed in stays the caller's to close."""
    keys = KeyRing(settings.data_dir, settings.alg, keep_old_for=settings.max_token_ttl, clock=clock)
    keys.load()
    owned_store = store is None
    store = create_store(settings, clock=clock) if store is None else store
    http = httpx.AsyncClient(follow_redirects=False)
    minter = TokenMinter(settings, keys, clock=clock)
    notifier = BackchannelNotifier(settings, minter, http)
    blocklist = Blocklist(store, clock=clock)
    accounts = Accounts(store, settings)
    families = TokenFamilies(
        store,
        refresh_token_ttl=settings.refresh_token_ttl,
        reuse_grace=settings.refresh_reuse_grace,
        blocklist=blocklist,
        notifier=notifier,
        clock=clock,
    )
    sessions = BrowserSessions(store, settings, accounts=accounts, families=families, notifier=notifier, clock=clock)
    issuer = TokenIssuer(
        settings,
        minter=minter,
        families=families,
        sessions=sessions,
        accounts=accounts,
        blocklist=blocklist,
        clock=clock,
    )
    codes = AuthorizationCodes(store, id_token_ttl=settings.id_token_ttl)
    server = DevAuthorizationServer(
        IdPServices(settings=settings, keys=keys, codes=codes, issuer=issuer, sessions=sessions, clock=clock)
    )
    register_grants(server)
    protocol = ProtocolEndpoints(
        settings, server, keys=keys, minter=minter, sessions=sessions, blocklist=blocklist, clock=clock
    )
    pushed = PushedRequests(settings, server, store, dpop=protocol.dpop_verifier, clock=clock)
    login = LoginFlow(
        settings,
        server,
        sessions=sessions,
        logins=LoginTransactions(store),
        accounts=accounts,
        pushed=pushed,
        clock=clock,
    )
    routes = [
        Route("/.well-known/openid-configuration", protocol.discovery, methods=["GET"]),
        Route("/jwks", protocol.jwks, methods=["GET"]),
        Route("/authorize", login.authorize, methods=["GET", "POST"]),  # Core 3.1.2.1: both
        Route("/login", login.submit, methods=["POST"]),
        Route("/token", protocol.token, methods=["POST"]),
        *([Route("/par", pushed.push, methods=["POST"])] if settings.par else []),
        Route("/revoke", protocol.revoke, methods=["POST"]),
        Route("/end_session", protocol.end_session, methods=["GET", "POST"]),
        Route("/userinfo", protocol.userinfo, methods=["GET", "POST"]),
        Route("/blocklist", protocol.blocklist, methods=["GET"]),
    ]
    if settings.demo_mode:
        admin = AdminPages(settings, sessions=sessions, accounts=accounts, families=families, keys=keys, login=login)
        routes.extend(admin.routes())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        logger.info("%s at %s (signing key %s)", BANNER, settings.issuer, keys.signing_key.kid)
        try:
            yield
        finally:
            await notifier.aclose()
            await http.aclose()
            if owned_store:
                await store.aclose()

    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={SessionStoreUnavailable: _store_unavailable},
    )


async def _store_unavailable(request: Request, exc: Exception) -> Response:
    logger.warning("%s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(
        {"error": "temporarily_unavailable"}, status_code=503, headers={"Retry-After": "5", "Cache-Control": "no-store"}
    )
