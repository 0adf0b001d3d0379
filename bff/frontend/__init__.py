"""The SPA's own files, for every path bff does not handle itself (HTTP adapter layer, beside the proxy).

Two implementations, chosen in ``bff.assembly`` from ``[frontend]`` (STYLE 2):

- :class:`~bff.frontend.static.StaticFrontend` (``directory = "dist"``): the built files, with an ``index.html``
  fallback for client-side routes, cache headers per kind of file and security headers;
- :class:`~bff.frontend.dev_server.DevServerFrontend` (``dev_server = "http://localhost:5173"``): a relay to the
  frontend's dev server, WebSocket upgrades (hot reload) included, that never forwards bff's cookie or an
  ``Authorization`` header.

A package rather than one module: the two share nothing but this protocol, and together they would pass the
size where STYLE 1 asks for a split.
"""

from __future__ import annotations

from typing import Protocol

from bff.types import Receive, Scope, Send


class Frontend(Protocol):
    """A raw ASGI app for ``http`` and ``websocket`` scopes, with resources that end at ``aclose()``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...

    async def aclose(self) -> None: ...
