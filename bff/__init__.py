"""bff: a Backend-for-Frontend reverse proxy.

The browser talks only to its own origin; bff runs the OpenID Connect login, keeps every token server-side behind
an opaque ``__Host-`` cookie, and proxies the SPA's API calls with ``Authorization: Bearer``.

The public API for embedding is two functions: ``bff.load_config(path)`` reads and validates a TOML file into a
frozen :class:`~bff.config.Config` (or raises :class:`~bff.errors.ConfigError` listing every problem), and
``bff.create_app(config)`` returns the ASGI application. Both load lazily, so ``import bff`` (and ``bff --help``)
imports no web framework.

bff owns the origin's root: its endpoints are ``/bff/*``, ``/healthz`` and ``/readyz``, its routes are absolute path
prefixes, and the session cookie is ``Path=/``. Mount it at ``/``, after the host's own routes. Starlette runs no
lifespan of a mounted app, so the host's lifespan enters bff's (it opens the session store and the HTTP clients,
loads the IdP metadata, and closes them all at shutdown)::

    import contextlib
    from collections.abc import AsyncIterator

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    import bff

    proxy = bff.create_app(bff.load_config("bff.toml"))


    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello from the host app")


    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with proxy.lifespan():
            yield


    app = Starlette(routes=[Route("/hello", hello), Mount("/", app=proxy)], lifespan=lifespan)

A FastAPI app mounts it the same way (``app.mount("/", proxy)`` after its own routes, and the same lifespan).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bff.app import create_app
    from bff.config import load_config

__version__ = "0.1.0"
__all__ = ["__version__", "create_app", "load_config"]

#: Public name -> the module that defines it, imported on first use.
_LAZY = {"create_app": "bff.app", "load_config": "bff.config"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bff' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
