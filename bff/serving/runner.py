"""``bff serve``: one process, or a :class:`~bff.serving.supervisor.Supervisor` and its workers, each serving the app
with a :class:`~bff.serving.server.DrainingServer` (graceful shutdown, exit 0)."""

from __future__ import annotations

import functools
import signal
import socket
import sys
from multiprocessing.connection import Connection
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from bff.app import BffApp
from bff.config import Config
from bff.errors import EXIT_CONFIG
from bff.frontends import FrontendsApp, create_serving_app, serving_app_from_env
from bff.serving.server import STOP_SIGNALS, DrainingServer
from bff.serving.supervisor import Supervisor
from bff.types import Message, Receive, Scope, Send


def serve(config: Config, *, workers: int, settings: dict[str, Any]) -> int:
    """Serve ``config`` with the uvicorn ``settings`` (``uvicorn_settings`` plus logging) until a stop signal;
    with ``workers`` > 1 each worker builds its app from the environment (``bff.app.app_from_env``: the config
    file named by ``BFF_CONFIG``, read again). Returns the exit status."""
    if workers > 1:
        # The app string is never loaded here: the workers build their own app (run_worker); this config binds
        # the socket and set up the supervisor's logging.
        supervisor_config = uvicorn.Config("bff.app:app_from_env", factory=True, workers=workers, **settings)
        target = functools.partial(run_worker, settings)
        return Supervisor(supervisor_config, workers, target, config.server).run()
    return _run(create_serving_app(config), settings, None)


def run_worker(settings: dict[str, Any], sockets: list[socket.socket], ready: Connection) -> None:
    """A worker process of ``bff serve --workers``: its app built from the environment the supervisor spawned it
    with (``app_from_env``), served on the supervisor's socket. It tells the supervisor it can be stopped as soon
    as it handles the stop signals (see :data:`~bff.serving.supervisor.Worker`); one that arrives while it starts
    is kept and starts the drain once the server runs."""
    early: list[int] = []
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda sig, frame: early.append(sig))
    ready.send_bytes(b"ready")
    ready.close()
    app = serving_app_from_env()
    sys.exit(_run(app, settings, sockets, early))


def _run(
    app: BffApp | FrontendsApp,
    settings: dict[str, Any],
    sockets: list[socket.socket] | None,
    early: list[int] | None = None,
) -> int:
    server = DrainingServer(uvicorn.Config(_QuietRefusal(app), **settings), settings=app.config.server, drain=app.drain)
    if early is not None:  # a worker: from now on the server handles the stop signals, those already come included
        for stop in STOP_SIGNALS:
            signal.signal(stop, server.handle_exit)
        for arrived in early:
            server.handle_exit(arrived, None)
    try:
        server.run(sockets)  # uvicorn exits (STARTUP_FAILURE) when the lifespan fails
    except SystemExit:
        if app.refused is not None:  # logged, one line per problem: exit as for any other configuration error
            return EXIT_CONFIG
        raise
    return 0 if server.started else STARTUP_FAILURE


class _QuietRefusal:
    """The app, except that a startup refused for the configuration (``ConfigError``, logged by the app) reaches
    uvicorn without the traceback it would print again."""

    def __init__(self, app: BffApp | FrontendsApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def quiet(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed" and self.app.refused is not None:
                message = {"type": "lifespan.startup.failed", "message": ""}
            await send(message)

        await self.app(scope, receive, quiet)
