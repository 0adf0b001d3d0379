"""Several frontends in one deployment (``[[frontends]]``): one app stack per frontend behind a thin dispatcher.

Each frontend gets a whole :class:`~bff.app.BffApp` (its own IdP client, ``SessionManager``, routes, proxy and
endpoints) built from its single-frontend view of the config (``bff.config.frontends.frontend_config``); the stacks
share the store connection, the tracing SDK and the process's metrics. Isolation does not rest on routing alone:
every store key of a frontend starts with its namespace, and its cookies, login states and records are signed and
encrypted with keys derived for its name, so what one frontend issued is refused by every other one even with one
key ring and one Redis.

A request goes to the frontend whose ``host`` equals its ``Host`` header (case-insensitive; a default port is
ignored) and, among those, whose ``path_prefix`` is the longest that matches whole segments; a frontend without a
``host`` takes any host, one with a matching ``host`` wins over it. The prefix is stripped before the frontend sees
the path (it is kept in the scope under ``bff.endpoints.common.PATH_PREFIX``). Nothing selected: ``404
unknown_frontend``, never a default frontend whose cookies the request might carry. ``/healthz`` and ``/readyz``
are the process's, answered here for every host: ready when every frontend's IdP metadata is loaded and the store
answers. docs/frontends.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from bff.app import ACCESS_LOG_ENV, BffApp, app_for_serving, create_store
from bff.config import Config, FrontendEntrySettings, load_config
from bff.config.frontends import frontend_config, store_namespace
from bff.endpoints.health import Drain
from bff.errors import ConfigError, NotReady, SessionStoreUnavailable, UnknownFrontend
from bff.proxy import send_error
from bff.proxy.responses import send_json
from bff.session.manager import DECODED_MEMO_BYTES
from bff.session.store import SessionStore
from bff.telemetry.exposition import METRICS_DIR_ENV
from bff.telemetry.spans import load_tracing
from bff.types import PATH_PREFIX, Clock, Receive, Scope, Send, system_clock

if TYPE_CHECKING:
    from bff.telemetry.tracing import Tracing

logger = logging.getLogger("bff.frontends")

_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


@dataclass(frozen=True)
class Site:
    """One frontend as the dispatcher selects it."""

    entry: FrontendEntrySettings
    app: BffApp
    #: ``host`` as configured (lower case, port unless default), or "" for any host.
    host: str
    default_port: str
    prefix: str

    def host_matches(self, host: str) -> bool:
        if not self.host:
            return True
        if host.endswith(self.default_port):  # Host: a.example:443 is the origin https://a.example
            host = host[: -len(self.default_port)]
        return host == self.host

    def path_matches(self, path: str) -> bool:
        return not self.prefix or path == self.prefix or path.startswith(self.prefix + "/")


class FrontendsApp:
    """The ASGI application of a ``[[frontends]]`` config. ``apps`` maps each frontend's name to its stack."""

    def __init__(
        self,
        config: Config,
        *,
        store: SessionStore | None = None,
        clock: Clock = system_clock,
        idp_transports: Sequence[httpx.AsyncBaseTransport | None] = (),
        store_prefix: str = "",
        tracing: Tracing | None = None,
        metrics_dir: str | None = None,
    ) -> None:
        self.config = config
        self.drain = Drain()
        self.tracing = tracing if tracing is not None else load_tracing(config.tracing)
        self.store = store if store is not None else create_store(config, clock=clock)
        self.apps: dict[str, BffApp] = {}
        sites: list[Site] = []
        for index, entry in enumerate(config.frontends):
            app = BffApp(
                frontend_config(config, entry),
                store=self.store,
                clock=clock,
                idp_transport=idp_transports[index] if index < len(idp_transports) else None,
                store_prefix=store_prefix + store_namespace(entry.name),
                tracing=self.tracing,
                metrics_dir=metrics_dir if index == 0 else None,  # one snapshot writer per process
                frontend_name=entry.name,
                owns_store=False,
                drain=self.drain,
                # The worker's memory for decoded sessions is shared out, not multiplied by the frontends.
                memo_bytes=DECODED_MEMO_BYTES // len(config.frontends),
            )
            self.apps[entry.name] = app
            scheme = entry.public_origin.partition(":")[0]
            sites.append(Site(entry, app, entry.host, _DEFAULT_PORTS.get(scheme, ""), entry.path_prefix))
        # Host-specific before any-host, then the longest prefix: the first match is the most specific.
        self.sites = sorted(sites, key=lambda s: (not s.host, -len(s.prefix)))

    def select(self, scope: Scope) -> Site | None:
        host = ""
        for name, value in scope.get("headers", ()):
            if name == b"host":
                host = value.decode("latin-1").lower()
                break
        path: str = scope["path"]
        return next((s for s in self.sites if s.host_matches(host) and s.path_matches(path)), None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path: str = scope["path"]
        if scope["type"] == "http" and path == "/healthz":
            await send_json(send, 200, {"status": "ok"})
            return
        if scope["type"] == "http" and path == "/readyz":
            await self._readyz(send)
            return
        site = self.select(scope)
        if site is None:
            await self._unknown(scope, send)
            return
        if site.prefix:
            raw: bytes = scope.get("raw_path") or path.encode("latin-1")
            prefix = site.prefix.encode("latin-1")
            if raw != prefix and not raw.startswith(prefix + b"/"):  # the prefix percent-encoded: not taken
                await self._unknown(scope, send)
                return
            stripped = path[len(site.prefix) :] or "/"
            scope = {**scope, "path": stripped, "raw_path": raw[len(prefix) :] or b"/", PATH_PREFIX: site.prefix}
        await site.app(scope, receive, send)

    @staticmethod
    async def _unknown(scope: Scope, send: Send) -> None:
        if scope["type"] == "http":
            await send_error(send, UnknownFrontend("no frontend is configured for this host and path"))
        else:  # a WebSocket handshake nobody takes: refused (403)
            await send({"type": "websocket.close", "code": 1008})

    async def _readyz(self, send: Send) -> None:
        if self.drain.started:
            await send_error(send, NotReady("not ready: shutting down"))
            return
        problems = [f"idp of {name} metadata not loaded" for name, app in self.apps.items() if not app.idp.ready]
        try:
            await self.store.ping()
        except SessionStoreUnavailable:
            problems.append("store unavailable")
        if problems:
            await send_error(send, NotReady("not ready: " + ", ".join(problems)))
        else:
            checks = {"store": "ok", **{f"idp:{name}": "ok" for name in self.apps}}
            await send_json(send, 200, {"status": "ready", "checks": checks})

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Every frontend's lifespan, entered in order and left in reverse, then the shared store and tracing closed;
        for a host app that mounts this one: ``async with app.lifespan(): ...``."""
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(self._close_shared)
            for app in self.apps.values():
                await stack.enter_async_context(app.lifespan())
            yield

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        try:
            running = self.lifespan()
            await running.__aenter__()
        except ConfigError:  # its IdP cannot serve its [oidc]: logged by that frontend, line by line
            await send({"type": "lifespan.startup.failed", "message": ""})
            return
        except Exception as exc:  # reported to the server, which exits
            logger.exception("a frontend failed to start")
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        assert message["type"] == "lifespan.shutdown"
        await running.__aexit__(None, None, None)
        await send({"type": "lifespan.shutdown.complete"})

    @property
    def refused(self) -> ConfigError | None:
        """The first frontend's refusal to start (``BffApp.refused``), if any."""
        return next((app.refused for app in self.apps.values() if app.refused is not None), None)

    async def _close_shared(self) -> None:
        await self.store.aclose()
        if self.tracing is not None:
            self.tracing.shutdown()


def create_serving_app(config: Config, *, metrics_dir: str | None = None) -> BffApp | FrontendsApp:
    """The app ``bff serve`` runs for ``config``: one frontend's, or the dispatcher over several; built, then frozen
    as :func:`bff.app.app_for_serving` explains."""
    if not config.frontends:
        return app_for_serving(config, metrics_dir=metrics_dir)
    app = FrontendsApp(config, metrics_dir=metrics_dir)
    gc.freeze()
    return app


def serving_app_from_env() -> BffApp | FrontendsApp:
    """:func:`bff.app.app_from_env` for every config, the one with ``[[frontends]]`` too."""
    config = load_config(os.environ["BFF_CONFIG"])
    if os.environ.get(ACCESS_LOG_ENV) == "1":  # bff serve --access-log
        config = dataclasses.replace(config, logging=dataclasses.replace(config.logging, access_log=True))
    return create_serving_app(config, metrics_dir=os.environ.get(METRICS_DIR_ENV) or None)
