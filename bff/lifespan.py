"""An app's startup and shutdown: the IdP metadata, the metrics snapshot file, every resource closed in order.

Startup loads the IdP metadata; if the IdP cannot be reached yet, the app still starts (``/readyz`` says 503) and
keeps retrying with back-off in the background. An IdP that answers but cannot serve the configuration (``[oidc]
par``, ``request_object``, ``profile``) is refused: logged one line per problem, and the app does not start (or,
found while retrying, stays not ready). Under ``bff serve --workers``, each worker writes its metrics to the
supervisor's directory (``bff.telemetry.exposition``) once per interval and after its last request.

Shutdown closes what startup and the app opened, users before what they use: the frontend, the refreshes in flight,
the upstream pool, the IdP client, the store; then the buffered access lines, the last metrics, the buffered spans.

:class:`AppLifespan` is the lifespan half of :class:`bff.app.BffApp`, which inherits it and sets the attributes
declared here in its ``__init__``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from starlette.applications import Starlette

from bff.config import Config
from bff.endpoints.health import Drain
from bff.errors import BffError, ConfigError
from bff.frontend import Frontend
from bff.oidc.provider import IdentityProvider
from bff.session.metered_store import MeteredStore
from bff.telemetry.exchange import Observers
from bff.telemetry.exposition import FLUSH_INTERVAL, set_build_info, write_snapshot
from bff.tokens import TokenManager
from bff.tokens.manager import SHUTDOWN_GRACE
from bff.upstream import UpstreamClient

if TYPE_CHECKING:
    from bff.telemetry.tracing import Tracing

# The app's lines under one logger name for operators' filters, whichever module writes them.
logger = logging.getLogger("bff.app")


class AppLifespan:
    """Startup and shutdown of an app's resources, as the Starlette lifespan of its control plane."""

    config: Config
    control: Starlette
    idp: IdentityProvider
    http: httpx.AsyncClient
    store: MeteredStore
    tokens: TokenManager
    upstream: UpstreamClient
    frontend: Frontend | None
    observers: Observers
    tracing: Tracing | None
    drain: Drain
    refused: ConfigError | None
    _owns_store: bool
    _metrics_dir: Path | None
    _retry: asyncio.Task[None] | None
    _flusher: asyncio.Task[None] | None

    def lifespan(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Startup and shutdown for a host app that mounts this one: ``async with bff_app.lifespan(): ...``."""
        return self._lifespan(self.control)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        try:
            await self.idp.load()
            logger.info("identity provider metadata loaded from %s", self.config.oidc.issuer)
        except ConfigError as exc:  # the IdP cannot serve [oidc] par/request_object/profile: do not start
            log_refusal(self.config.oidc.issuer, exc)
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
                log_refusal(self.config.oidc.issuer, exc)
                return
            except BffError as exc:
                delay = min(delay * 2, 30.0)
                logger.warning("identity provider still not reachable (%s); next try in %.0fs", exc.message, delay)


def log_refusal(issuer: str, exc: ConfigError) -> None:
    """One line per capability the IdP lacks (``bff.oidc.profiles``); no traceback, the problems say it all."""
    lines = "\n".join(f"  - {problem}" for problem in exc.problems)
    logger.error("the identity provider %s cannot serve this configuration:\n%s", issuer, lines)
