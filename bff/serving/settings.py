"""The one source of the uvicorn settings of ``bff serve``, the demo and the test servers."""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

from bff.config import ServerSettings
from bff.serving.httptools_protocol import CoalescingHttpToolsProtocol
from bff.serving.limits import EdgeLimits


def uvicorn_settings(server: ServerSettings) -> dict[str, Any]:
    """The uvicorn settings of ``bff serve``, the demo and the test servers, for one ``[server]`` table.

    - ``loop``: uvloop (installed by ``uvicorn[standard]``) whenever it imports; the asyncio fallback keeps
      ``bff serve`` working where uvloop cannot be installed (PyPy, Windows). uvicorn's "auto" prefers it too, but
      falls back without a word;
    - ``http``: :class:`CoalescingHttpToolsProtocol` with the ``[server]`` limits (a ``functools.partial``, which
      pickles, so ``--workers`` processes get the same limits);
    - ``proxy_headers=False``: bff judges ``X-Forwarded-*`` itself (``trusted_proxies``); uvicorn's middleware
      would believe them from any loopback peer;
    - ``server_header=False``: no product banner.
    """
    loop = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    return {
        "host": server.host,
        "port": server.port,
        "loop": loop,
        "http": functools.partial(CoalescingHttpToolsProtocol, limits=EdgeLimits.of(server)),
        "proxy_headers": False,
        "server_header": False,
        "timeout_keep_alive": server.keep_alive_timeout,
    }
