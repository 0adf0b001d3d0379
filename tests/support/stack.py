"""bff and a test OpenID Provider as real servers on loopback, wired together: the end-to-end test bed."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import uuid4

from bff.app import BffApp
from bff.config import Config
from bff.session.memory_store import MemoryStore
from bff.session.store import SessionStore
from bff.types import Clock, system_clock
from tests.support.configs import base_document, make_config
from tests.support.oidc_provider import TestProvider
from tests.support.servers import serve

if TYPE_CHECKING:
    from bff.telemetry.tracing import Tracing


@dataclass
class Stack:
    provider: TestProvider
    app: BffApp
    url: str
    idp_url: str

    @property
    def config(self) -> Config:
        return self.app.config


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def running_bff(
    provider: TestProvider,
    idp_url: str,
    *,
    customize: Callable[[dict[str, Any]], None] | None = None,
    **options: Any,
) -> Iterator[Stack]:
    """Serve bff against ``provider`` (already served at ``idp_url``); ``options`` are :func:`serving_bff`'s
    (``redis_url``, ``store``, ``clock``, ``store_prefix``, ``tracing``)."""

    def with_secret(doc: dict[str, Any]) -> None:
        doc["oidc"]["client_secret"] = provider.client_secret or ""
        if customize is not None:
            customize(doc)

    with serving_bff(idp_url, customize=with_secret, **options) as (app, url):
        yield Stack(provider=provider, app=app, url=url, idp_url=idp_url)


@contextlib.contextmanager
def serving_bff(
    idp_url: str,
    *,
    redis_url: str | None = None,
    store: SessionStore | None = None,
    clock: Clock = system_clock,
    customize: Callable[[dict[str, Any]], None] | None = None,
    store_prefix: str | None = None,
    tracing: Tracing | None = None,
) -> Iterator[tuple[BffApp, str]]:
    """Serve bff for the OpenID Provider at ``idp_url``, whatever it is, with the Redis store when ``redis_url`` is
    given, else the memory store (or an explicit ``store``); instances given one ``store_prefix`` share sessions.
    ``customize`` sees the config document, its ``[server] public_origin`` already set (the port is bound first),
    and sets the client. Yields the app and its URL."""
    sock = bound_socket()
    public_origin = f"http://127.0.0.1:{sock.getsockname()[1]}"
    doc = base_document(public_origin=public_origin, issuer=idp_url)
    doc["routes"] = []
    if redis_url:
        doc["session"]["store"] = redis_url  # the app builds its RedisStore from the config, as in production
    if customize is not None:
        customize(doc)
    config = make_config(doc)
    if store is None and not redis_url:
        store = MemoryStore(clock=clock)
    # Tests share one Redis: each app gets key prefixes of its own.
    app = BffApp(config, store=store, clock=clock, store_prefix=store_prefix or f"e2e{uuid4().hex}:", tracing=tracing)
    with serve(app, sock=sock) as url:
        yield app, url


@contextlib.contextmanager
def running_stack(
    *,
    redis_url: str | None = None,
    clock: Clock = system_clock,
    customize: Callable[[dict[str, Any]], None] | None = None,
    tracing: Tracing | None = None,
    **provider_options: Any,
) -> Iterator[Stack]:
    provider = TestProvider(**provider_options)
    with serve(provider.app) as idp_url:
        provider.issuer = idp_url
        with running_bff(
            provider, idp_url, redis_url=redis_url, clock=clock, customize=customize, tracing=tracing
        ) as stack:
            yield stack
