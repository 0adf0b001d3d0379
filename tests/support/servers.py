"""Run ASGI apps as real HTTP servers on loopback, each in its own thread and event loop.

The socket is bound (port 0) before the server starts, so there is no race for a free port. The uvicorn settings
are ``bff serve``'s own (``bff.serving.uvicorn_settings``: bff's protocol and edge limits, no trust in
``X-Forwarded-For``), for the default ``[server]`` table or the one a test passes; the loop is uvloop, as under
``bff serve``: uvloop's transports are not asyncio's classes, and a test on asyncio's loop alone would not see code
that assumes they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import uvicorn
import uvloop

from bff.config import ServerSettings
from bff.serving import uvicorn_settings
from bff.serving.limits import EdgeLimits
from bff.types import ASGIApp
from bff_devtools.devidp.mtls import TLSScopeProtocol
from tests.support.ports import free_port as free_port


@dataclass(frozen=True)
class ServerTLS:
    """Serve https with this certificate; a client certificate is asked for (optional) and, when sent, must chain
    to ``client_ca``; the app sees it in the ASGI TLS extension (``bff_devtools.devidp.mtls``)."""

    cert: Path
    key: Path
    client_ca: Path | None = None


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # pragma: no cover - threads cannot install signal handlers
        pass


def _run_on_uvloop(server: uvicorn.Server, sock: socket.socket) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(server.serve(sockets=[sock]))


@contextlib.contextmanager
def serve(
    app: ASGIApp,
    *,
    lifespan: Literal["auto", "on", "off"] = "auto",
    sock: socket.socket | None = None,
    settings: ServerSettings | None = None,
    tls: ServerTLS | None = None,
    date_header: bool = True,
) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 with the uvicorn settings of ``bff serve`` for ``settings`` (default: the
    ``[server]`` defaults) and yield its base URL (``http://127.0.0.1:PORT``). ``date_header=False``: uvicorn adds
    no ``Date`` (an app that sends its own, e.g. a skewed clock, is not contradicted)."""
    if sock is None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server_settings = settings or ServerSettings()
    extra: dict[str, Any] = {}
    if tls is not None:
        extra = {
            "http": functools.partial(TLSScopeProtocol, limits=EdgeLimits.of(server_settings)),
            "ssl_certfile": str(tls.cert),
            "ssl_keyfile": str(tls.key),
            "ssl_ca_certs": str(tls.client_ca) if tls.client_ca else None,
            "ssl_cert_reqs": ssl.CERT_OPTIONAL if tls.client_ca else ssl.CERT_NONE,
        }
    config = uvicorn.Config(
        app,
        **{
            **uvicorn_settings(server_settings),
            **extra,
            "loop": "none",  # the thread runs its own uvloop (_run_on_uvloop)
            "lifespan": lifespan,
            "log_level": "warning",
            "access_log": False,
            "timeout_graceful_shutdown": 2,
            "date_header": date_header,
        },
    )
    server = _Server(config)
    thread = threading.Thread(target=lambda: _run_on_uvloop(server, sock), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server failed to start")
        time.sleep(0.01)
    try:
        yield f"{'https' if tls is not None else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
