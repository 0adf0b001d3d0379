"""The parts the composition root picks from the config, each implementation chosen in one place (STYLE 2).

``bff.app.BffApp`` calls these while it assembles an app: the session store, the per-request observers, the
frontend, bff's DPoP key, and the data plane's two entries (HTTP and WebSocket). ``bff.app`` re-exports the public
ones, so ``from bff.app import create_store`` keeps working.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from ipaddress import IPv4Network, IPv6Network
from typing import TypedDict
from urllib.parse import urlsplit

from bff.config import Config, FrontendSettings
from bff.errors import BffError
from bff.frontend import Frontend
from bff.frontend.dev_server import DevServerFrontend
from bff.frontend.static import StaticFrontend
from bff.oidc.dpop import DPoPProver, load_dpop_key
from bff.proxy import Proxy
from bff.proxy.websocket import WebSocketProxy
from bff.session.memory_store import MemoryStore
from bff.session.redis_store import RedisStore
from bff.session.store import SessionStore
from bff.telemetry.access_log import AccessLog
from bff.telemetry.builtin import BuiltinTelemetry
from bff.telemetry.exchange import Observer, Observers
from bff.telemetry.http_metrics import HttpMetrics
from bff.telemetry.request_ids import RequestIds
from bff.tokens import TokenManager
from bff.types import Clock, system_clock
from bff.upstream import UpstreamClient
from bff.upstream.websocket import WebSocketClient


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


class _Forwarding(TypedDict):
    """What both proxies are told of how the browser reached bff (``X-Forwarded-*``) and of ended sessions."""

    public_origin: str
    trusted_proxies: Sequence[IPv4Network | IPv6Network]
    error_headers: Callable[[BffError], list[tuple[bytes, bytes]]]


def create_proxies(
    config: Config,
    upstream: UpstreamClient,
    tokens: TokenManager,
    *,
    error_headers: Callable[[BffError], list[tuple[bytes, bytes]]],
    dpop: DPoPProver | None,
    observers: Observers,
) -> tuple[Proxy, WebSocketProxy | None]:
    """The data plane over the configured routes: the HTTP proxy, and the WebSocket one when a route has
    ``websocket = true`` (None otherwise: the app refuses every handshake, 1008)."""
    forwarding = _Forwarding(
        public_origin=config.server.public_origin,
        trusted_proxies=config.server.trusted_proxies,
        error_headers=error_headers,
    )
    proxy = Proxy(
        config.routes,
        upstream,
        tokens,
        **forwarding,
        replay_limit=config.tokens.replay_limit,
        dpop=dpop,
        observers=observers,
        acr_values_allowed=config.oidc.acr_values_allowed,
    )
    if not any(route.websocket for route in config.routes):
        return proxy, None
    return proxy, WebSocketProxy(config.routes, upstream, tokens, **forwarding)
