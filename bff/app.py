"""The composition root: picks implementations, builds the routes, owns the lifespan.

Requests are dispatched by a small raw-ASGI router before any framework runs:

* ``/bff/*``, ``/healthz``, ``/readyz`` -> the control plane, a Starlette app (login, callback, user, logout);
* a configured route prefix -> the proxy, raw ASGI on the data plane (a framework per proxied request
  costs more CPU than the whole proxy hop: docs/performance.md);
* anything else -> the frontend (when configured) or ``404 {"error": "not_found"}``.

The lifespan opens the store, the IdP and upstream HTTP clients, and loads the IdP metadata; if the IdP cannot be
reached yet, the app still starts (``/readyz`` says 503) and keeps retrying with back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bff.client_tls import check_client_certificates
from bff.config import Config, FrontendSettings
from bff.config.frontends import oidc_key
from bff.endpoints.backchannel import BackchannelLogout
from bff.endpoints.callback import Callback
from bff.endpoints.common import SessionCookie, html_error, json_error
from bff.endpoints.health import Drain, Readyz, healthz
from bff.endpoints.login import Login, LoginCookies
from bff.endpoints.logout import Logout
from bff.endpoints.user import User
from bff.errors import BffError, ConfigError, MethodNotAllowed, NotFound, ServiceUnavailable, SessionExpired
from bff.frontend import Frontend
from bff.frontend.dev_server import DevServerFrontend
from bff.frontend.static import StaticFrontend
from bff.idp_http import create_idp_client, idp_client_cert
from bff.oidc.dpop import DPoPProver, load_dpop_key
from bff.oidc.provider import IdentityProvider
from bff.proxy import Proxy, send_error
from bff.proxy.websocket import WebSocketProxy
from bff.session.manager import DECODED_MEMO_BYTES, SessionManager
from bff.session.memory_store import MemoryStore
from bff.session.metered_store import MeteredStore
from bff.session.redis_store import RedisStore
from bff.session.store import SessionStore
from bff.session.traced_store import TracedStore
from bff.telemetry.access_log import AccessLog
from bff.telemetry.builtin import BuiltinTelemetry
from bff.telemetry.exchange import EXCHANGE, FRONTEND, UNMATCHED, Exchange, Observer, Observers
from bff.telemetry.exposition import FLUSH_INTERVAL, METRICS_DIR_ENV, set_build_info, write_snapshot
from bff.telemetry.http_metrics import HttpMetrics
from bff.telemetry.request_ids import RequestIds
from bff.telemetry.spans import load_tracing
from bff.tokens import TokenManager
from bff.tokens.manager import SHUTDOWN_GRACE
from bff.types import ASGIApp, Clock, Message, Receive, Scope, Send, system_clock
from bff.upstream import UpstreamClient
from bff.upstream.traced import TracedUpstreamClient
from bff.upstream.websocket import WebSocketClient

if TYPE_CHECKING:
    from bff.telemetry.tracing import Tracing

logger = logging.getLogger("bff.app")

#: Set to "1" by ``bff serve --access-log`` for its worker processes, which read the config file themselves.
ACCESS_LOG_ENV = "BFF_ACCESS_LOG"
CONTROL_PREFIX = "/bff/"
CONTROL_PATHS = frozenset({"/bff", "/healthz", "/readyz"})
#: Navigations (not XHR) get an HTML error page instead of JSON.
NAVIGATION_PATHS = frozenset({"/bff/login", "/bff/callback"})
#: Control-plane paths telemetry names as themselves (``http_route``); any other path under ``/bff/`` is unmatched.
CONTROL_ROUTES = frozenset(
    {"/bff/login", "/bff/callback", "/bff/user", "/bff/logout", "/bff/backchannel-logout", "/healthz", "/readyz"}
)


def create_store(config: Config, *, clock: Clock = system_clock) -> SessionStore:
    """The one place a store implementation is chosen (STYLE 2)."""
    url = config.session.store
    if urlsplit(url).scheme == "memory":
        return MemoryStore(clock=clock)
    session = config.session
    return RedisStore.from_url(
        url, timeout=session.store_timeout, max_reply=session.store_max_reply, replicas=session.store_replicas
    )


def create_observers(config: Config) -> list[Observer]:
    """The per-request observers, declared as data in the order they run (``bff.telemetry.exchange``): the request
    id first (the others read it), then the metrics, the access line last; with metrics and the access log both on,
    the three as one fused observer (one call per hook point). None configured: the data plane skips the seam."""
    metrics_on = config.metrics.address() is not None
    access_log = config.logging.access_log
    observers: list[Observer] = []
    if metrics_on and access_log:  # the three built-ins fused: one call per hook point (bff.telemetry.builtin)
        return [BuiltinTelemetry(AccessLog(json=config.logging.format == "json"))]
    if metrics_on or access_log:
        observers.append(RequestIds())
    if metrics_on:
        observers.append(HttpMetrics())
    if access_log:
        observers.append(AccessLog(json=config.logging.format == "json"))
    return observers


def create_frontend(settings: FrontendSettings | None, upstream: UpstreamClient) -> Frontend | None:
    """The one place a frontend implementation is chosen: built files, a dev server, or none (404s)."""
    if settings is not None and settings.directory:
        return StaticFrontend(settings.directory)
    if settings is not None and settings.dev_server:
        return DevServerFrontend(settings.dev_server, upstream, WebSocketClient())
    return None


def create_dpop(config: Config, clock: Clock) -> DPoPProver | None:
    """bff's DPoP key and nonce memory when ``[oidc] dpop`` (RFC 9449; docs/dpop.md), else None."""
    if not config.oidc.dpop or not config.oidc.dpop_key_file:
        return None
    return DPoPProver(load_dpop_key(config.oidc.dpop_key_file), clock=clock)


class BffApp:
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
        self.proxy = Proxy(
            config.routes,
            self.upstream,
            self.tokens,
            public_origin=config.server.public_origin,
            trusted_proxies=config.server.trusted_proxies,
            error_headers=self._error_headers,
            replay_limit=config.tokens.replay_limit,
            dpop=self.dpop,
            observers=self.observers,
            acr_values_allowed=config.oidc.acr_values_allowed,
        )
        #: WebSocket handshakes on ``websocket = true`` routes; None when no route accepts them (refused: 1008).
        self.websockets = (
            WebSocketProxy(
                config.routes,
                self.upstream,
                self.tokens,
                public_origin=config.server.public_origin,
                trusted_proxies=config.server.trusted_proxies,
                error_headers=self._error_headers,
            )
            if any(route.websocket for route in config.routes)
            else None
        )
        self.frontend = create_frontend(config.frontend, self.upstream)
        self.login_cookies = LoginCookies(config, self.sessions, clock)
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
            exception_handlers={BffError: self._on_error, HTTPException: self._on_http_exception},
            lifespan=self._lifespan,
        )

    def _error_headers(self, exc: BffError) -> list[tuple[bytes, bytes]]:
        """A session that ended (invalid_grant, reuse detected) also loses its cookie."""
        return [self.cookie.clear_header()] if isinstance(exc, SessionExpired) else []

    async def _on_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BffError)
        exchange: Exchange | None = request.scope.get(EXCHANGE)
        if exchange is not None:
            exchange.error = exc.error
        if isinstance(exc, ServiceUnavailable):
            logger.warning("%s %s: %s", request.method, request.url.path, exc.message)
        path = request.url.path
        if path in NAVIGATION_PATHS or (path == "/bff/logout" and request.method == "GET"):
            title = "Sign-out failed" if path == "/bff/logout" else "Sign-in failed"
            response: Response = html_error(exc, title=title)
        else:
            response = json_error(exc)
        if isinstance(exc, SessionExpired):
            self.cookie.clear(response)
        if path == "/bff/callback":  # a failed callback ends its login too: its login cookie goes
            self.login_cookies.clear(request, response)
        return response

    async def _on_http_exception(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        error: BffError
        if exc.status_code == 405:
            error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
        else:
            error = NotFound(f"no such endpoint: {request.url.path}")
        exchange: Exchange | None = request.scope.get(EXCHANGE)
        if exchange is not None:
            exchange.error = error.error
        return json_error(error)

    # --- lifespan ------------------------------------------------------------------------------------------------

    def lifespan(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Startup and shutdown for a host app that mounts this one: ``async with bff_app.lifespan(): ...``."""
        return self._lifespan(self.control)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        try:
            await self.idp.load()
            logger.info("identity provider metadata loaded from %s", self.config.oidc.issuer)
        except ConfigError as exc:  # the IdP cannot serve [oidc] par/request_object/profile: do not start
            _log_refusal(self.config.oidc.issuer, exc)
            self.refused = exc
            await self.http.aclose()  # the discovery call's connection; nothing else was opened yet
            raise
        except BffError as exc:
            logger.warning("identity provider not reachable yet (%s); retrying in the background", exc.message)
            self._retry = asyncio.create_task(self._keep_loading())
        if self._metrics_dir is not None:
            self._flusher = asyncio.create_task(self._flush_metrics(self._metrics_dir))
        try:
            yield
        finally:
            if self._flusher is not None:
                self._flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._flusher
            if self._retry is not None:
                self._retry.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._retry
            if self.frontend is not None:
                await self.frontend.aclose()
            # Before the IdP client and the store it still uses; under bff serve, within shutdown_timeout.
            await self.tokens.aclose(self.drain.time_left(asyncio.get_running_loop().time(), SHUTDOWN_GRACE))
            await self.upstream.aclose()
            await self.http.aclose()
            if self._owns_store:
                await self.store.aclose()
            self.observers.flush()  # the access lines still buffered
            if self._metrics_dir is not None:  # the last counts, after the last request
                self._write_metrics(self._metrics_dir, stopped=True)
            if self.tracing is not None and self._owns_store:
                self.tracing.shutdown()  # the spans still buffered are exported

    async def _flush_metrics(self, directory: Path) -> None:
        """This worker's metrics for the supervisor's scrape (``bff.telemetry.exposition``), once per interval."""
        set_build_info()
        while True:
            self._write_metrics(directory)
            await asyncio.sleep(FLUSH_INTERVAL)

    @staticmethod
    def _write_metrics(directory: Path, *, stopped: bool = False) -> None:
        try:
            write_snapshot(directory, stopped=stopped)
        except OSError as exc:  # the directory went away (the supervisor stopping): nothing to report to
            logger.warning("cannot write the metrics snapshot: %s", exc.strerror or exc)

    async def _keep_loading(self) -> None:
        delay = 0.5
        while not self.idp.ready:
            await asyncio.sleep(delay)
            try:
                await self.idp.load()
                logger.info("identity provider metadata loaded from %s", self.config.oidc.issuer)
            except ConfigError as exc:  # stays not ready: serving this IdP would break [oidc] par/profile
                _log_refusal(self.config.oidc.issuer, exc)
                return
            except BffError as exc:
                delay = min(delay * 2, 30.0)
                logger.warning("identity provider still not reachable (%s); next try in %.0fs", exc.message, delay)

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


def _log_refusal(issuer: str, exc: ConfigError) -> None:
    """One line per capability the IdP lacks (``bff.oidc.profiles``); no traceback, the problems say it all."""
    lines = "\n".join(f"  - {problem}" for problem in exc.problems)
    logger.error("the identity provider %s cannot serve this configuration:\n%s", issuer, lines)
