"""The composition root: picks implementations, builds the routes, owns the lifespan.

Requests are dispatched by a small raw-ASGI router before any framework runs:

* ``/bff/*``, ``/healthz``, ``/readyz`` -> the control plane, a Starlette app (login, callback, user, logout);
* a configured route prefix -> the proxy, raw ASGI on the data plane (a framework per proxied request
  costs more CPU than the whole proxy hop: docs/performance.md);
* anything else -> the frontend (when configured) or ``404 {"error": "not_found"}``.

The implementations are chosen in ``bff.assembly``; the lifespan (``bff.lifespan``) opens the store, the IdP and
upstream HTTP clients, and loads the IdP metadata; if the IdP cannot be reached yet, the app still starts
(``/readyz`` says 503) and keeps retrying with back-off.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route

from bff.assembly import create_dpop, create_frontend, create_observers, create_proxies, create_store
from bff.client_tls import check_client_certificates
from bff.config import Config
from bff.config.frontends import oidc_key
from bff.endpoints.backchannel import BackchannelLogout
from bff.endpoints.callback import Callback
from bff.endpoints.common import SessionCookie
from bff.endpoints.exception_handlers import ExceptionHandlers
from bff.endpoints.health import Drain, Readyz, healthz
from bff.endpoints.login import Login, LoginCookies
from bff.endpoints.logout import Logout
from bff.endpoints.user import User
from bff.errors import BffError, ConfigError, NotFound
from bff.idp_http import create_idp_client, idp_client_cert
from bff.lifespan import AppLifespan
from bff.oidc.provider import IdentityProvider
from bff.proxy import send_error
from bff.session.manager import DECODED_MEMO_BYTES, SessionManager
from bff.session.memory_store import MemoryStore
from bff.session.metered_store import MeteredStore
from bff.session.redis_store import RedisStore
from bff.session.store import SessionStore
from bff.session.traced_store import TracedStore
from bff.telemetry.exchange import EXCHANGE, FRONTEND, UNMATCHED, Exchange, Observer, Observers
from bff.telemetry.exposition import METRICS_DIR_ENV
from bff.telemetry.spans import load_tracing
from bff.tokens import TokenManager
from bff.types import ASGIApp, Clock, Message, Receive, Scope, Send, system_clock
from bff.upstream import UpstreamClient
from bff.upstream.traced import TracedUpstreamClient

if TYPE_CHECKING:
    from bff.telemetry.tracing import Tracing

# What callers import from here; the factories live in bff.assembly.
__all__ = [
    "ACCESS_LOG_ENV",
    "CONTROL_PATHS",
    "BffApp",
    "app_for_serving",
    "app_from_env",
    "create_app",
    "create_dpop",
    "create_frontend",
    "create_observers",
    "create_store",
]

#: Set to "1" by ``bff serve --access-log`` for its worker processes, which read the config file themselves.
ACCESS_LOG_ENV = "BFF_ACCESS_LOG"
CONTROL_PREFIX = "/bff/"
CONTROL_PATHS = frozenset({"/bff", "/healthz", "/readyz"})
#: Control-plane paths telemetry names as themselves (``http_route``); any other path under ``/bff/`` is unmatched.
CONTROL_ROUTES = frozenset(
    {"/bff/login", "/bff/callback", "/bff/user", "/bff/logout", "/bff/backchannel-logout", "/healthz", "/readyz"}
)


class BffApp(AppLifespan):
    """The ASGI application. Attributes expose the composed services to the CLI and tests."""

    def __init__(
        self,
        config: Config,
        *,
        store: SessionStore | None = None,
        clock: Clock = system_clock,
        idp_transport: httpx.AsyncBaseTransport | None = None,
        store_prefix: str = "",
        tracing: Tracing | None = None,
        observers: Sequence[Observer] | None = None,
        metrics_dir: str | None = None,
        frontend_name: str = "",
        owns_store: bool = True,
        drain: Drain | None = None,
        memo_bytes: int = DECODED_MEMO_BYTES,
    ) -> None:
        if config.frontends:  # one stack per frontend: never one stack for all of them
            raise ConfigError(["frontends: a [[frontends]] config runs as bff.frontends.FrontendsApp (bff serve does)"])
        self.config = config
        #: False when several frontends share the store and tracing (bff.frontends closes them once).
        self._owns_store = owns_store
        self.clock = clock
        check_client_certificates(config)  # before any TLS context loads one: errors that name the key
        #: The tracing SDK (``tracing``, or from ``[tracing]``); None: no span anywhere, nothing wrapped.
        self.tracing = tracing if tracing is not None else load_tracing(config.tracing)
        store = store if store is not None else create_store(config, clock=clock)
        if self.tracing is not None:
            kind = "redis" if isinstance(store, RedisStore) else "memory" if isinstance(store, MemoryStore) else "other"
            store = TracedStore(store, self.tracing, system=kind)
        # Every store, chosen here or handed in, is metered the same way (bff.session.metered_store).
        self.store = MeteredStore(store)
        self.http = create_idp_client(
            timeout=config.oidc.timeout,
            ca_bundle=config.oidc.ca_bundle,
            transport=idp_transport,
            client_cert=idp_client_cert(config.oidc),
            # Tracing: a span per IdP call, named by its endpoint (known once the IdP's metadata is loaded).
            wrap_transport=None
            if self.tracing is None
            else partial(self.tracing.idp_transport, endpoint_name=self._idp),
        )
        self.dpop = create_dpop(config, clock)
        self.idp = IdentityProvider(
            config.oidc, self.http, clock=clock, dpop=self.dpop, config_key=oidc_key(frontend_name)
        )
        self.sessions = SessionManager(
            self.store, config.session, clock=clock, prefix=store_prefix, frontend=frontend_name, memo_bytes=memo_bytes
        )
        self.cookie = SessionCookie(config, self.sessions)
        self.login_cookies = LoginCookies(config, self.sessions, clock)
        self._handlers = ExceptionHandlers(self.cookie, self.login_cookies)
        self.tokens = TokenManager(
            self.sessions,
            self.idp,
            cookie_name=config.session.cookie_name,
            settings=config.tokens,
            clock=clock,
            spans=self.tracing,
            dpop=self.dpop is not None,
        )
        self.upstream = UpstreamClient() if self.tracing is None else TracedUpstreamClient(self.tracing)
        observed = list(create_observers(config) if observers is None else observers)
        if self.tracing is not None:  # first: the other observers' work belongs to its server span
            observed.insert(0, self.tracing.observer())
        self.observers = Observers(observed)
        # websockets: handshakes on ``websocket = true`` routes; None when no route accepts them (refused: 1008).
        self.proxy, self.websockets = create_proxies(
            config,
            self.upstream,
            self.tokens,
            error_headers=self._handlers.error_headers,
            dpop=self.dpop,
            observers=self.observers,
        )
        self.frontend = create_frontend(config.frontend, self.upstream)
        self._retry: asyncio.Task[None] | None = None
        #: Why the lifespan refused to start (logged already, one line per problem), if it did.
        self.refused: ConfigError | None = None
        self._metrics_dir = Path(metrics_dir) if metrics_dir else None
        self._flusher: asyncio.Task[None] | None = None
        #: Begun by the server on SIGTERM: ``/readyz`` answers 503 from then on.
        self.drain = drain or Drain()
        self.control = self._control_app()

    # --- composition ---------------------------------------------------------------------------------------------

    def _idp(self, url: str) -> str:
        return self.idp.endpoint_name(url)

    def _control_app(self) -> Starlette:
        config = self.config
        logins = self.login_cookies
        routes = [
            Route("/bff/login", Login(config, self.sessions, self.idp, logins, self.clock).handle, methods=["GET"]),
            Route(
                "/bff/callback", Callback(config, self.sessions, self.idp, logins, self.cookie).handle, methods=["GET"]
            ),
            Route("/bff/user", User(config, self.sessions, self.cookie, self.clock).handle, methods=["GET"]),
            Route("/bff/logout", Logout(config, self.sessions, self.idp, self.cookie).handle, methods=["GET", "POST"]),
            Route(
                "/bff/backchannel-logout", BackchannelLogout(config, self.sessions, self.idp).handle, methods=["POST"]
            ),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", Readyz(self.store, self.idp, self.drain).handle, methods=["GET"]),
        ]
        return Starlette(
            routes=routes,
            exception_handlers={BffError: self._handlers.on_error, HTTPException: self._handlers.on_http_exception},
            lifespan=self._lifespan,
        )

    # --- dispatch ------------------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.control(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith(CONTROL_PREFIX) or path in CONTROL_PATHS:
            if self.observers and scope["type"] == "http":
                await self._observed(self.control, scope, receive, send, path if path in CONTROL_ROUTES else UNMATCHED)
            else:
                await self.control(scope, receive, send)
        elif self.proxy.match(path) is not None:
            if scope["type"] == "http":
                await self.proxy(scope, receive, send)  # observed inside, at the proxy's own seam
            elif self.websockets is not None:  # websocket = true routes (others refuse inside: 403)
                await self.websockets(scope, receive, send)
            else:  # no route relays WebSockets: refuse the handshake (403)
                await send({"type": "websocket.close", "code": 1008})
        elif self.frontend is not None:  # the SPA: its files, or its dev server (WebSockets included)
            if self.observers and scope["type"] == "http":
                await self._observed(self.frontend, scope, receive, send, FRONTEND)
            else:
                await self.frontend(scope, receive, send)
        elif scope["type"] == "http":
            if self.observers:
                await self._observed(self._not_found, scope, receive, send, UNMATCHED)
            else:
                await self._not_found(scope, receive, send)
        else:  # a websocket with nowhere to go: refuse the handshake (403)
            await send({"type": "websocket.close", "code": 1008})

    @staticmethod
    async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
        exchange: Exchange | None = scope.get(EXCHANGE)
        if exchange is not None:
            exchange.error = NotFound.error
        await send_error(send, NotFound(f"no route for {scope['path'][:200]}"))

    async def _observed(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send, route: str) -> None:
        """``app`` with the observers around it: the control plane and the frontend (off the data plane)."""
        exchange = self.observers.exchange(scope, route)

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
                if exchange.response_headers:
                    message = {**message, "headers": [*message.get("headers", ()), *exchange.response_headers]}
            elif message["type"] == "http.response.body":
                exchange.bytes_out += len(message.get("body", b""))
            await send(message)

        async def observed_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                exchange.bytes_in += len(message.get("body", b""))
            return message

        try:
            await app(scope, observed_receive, observed_send)
        finally:
            self.observers.end(exchange)


def create_app(config: Config) -> BffApp:
    """bff as an ASGI application for ``config``: the public entry point for embedding (see ``bff``'s docstring).

    Served on its own, the server runs its lifespan; mounted inside another app, enter :meth:`BffApp.lifespan` from
    the host's lifespan, because Starlette runs no lifespan of a mounted app.
    """
    return BffApp(config)


def app_for_serving(config: Config, *, metrics_dir: str | None = None) -> BffApp:
    """The app of a served process (``bff serve``, each ``--workers`` process): built, then frozen.

    What is imported and built by now lives as long as the process; out of the cyclic collector's reach
    (``gc.freeze``) it is no longer walked by every full collection, which otherwise shows as latency spikes. Never
    in tests or embedded apps: frozen objects are never collected.
    """
    app = BffApp(config, metrics_dir=metrics_dir)
    gc.freeze()
    return app


def app_from_env() -> ASGIApp:
    """Factory for ``uvicorn --factory bff.app:app_from_env``, and for each worker of ``bff serve --workers``: reads
    the config named by ``BFF_CONFIG`` (and ``--access-log``, the metrics directory from the environment)."""
    import dataclasses
    import os

    from bff.config import load_config

    config = load_config(os.environ["BFF_CONFIG"])
    if os.environ.get(ACCESS_LOG_ENV) == "1":  # bff serve --access-log
        config = dataclasses.replace(config, logging=dataclasses.replace(config.logging, access_log=True))
    return app_for_serving(config, metrics_dir=os.environ.get(METRICS_DIR_ENV) or None)
