"""``bff serve``: run the proxy (``--workers N`` processes on one socket); stops gracefully on SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from bff.cli.common import check_dpop_key, config_path, load
from bff.config import Config
from bff.config.frontends import frontend_config
from bff.errors import ConfigError

if TYPE_CHECKING:
    from bff.cli.common import SubParsers


def cmd_serve(args: argparse.Namespace) -> int:
    from bff.app import ACCESS_LOG_ENV
    from bff.serving import serve, uvicorn_settings
    from bff.telemetry.logs import serve_logging_config

    config = load(args)
    for single in [frontend_config(config, entry) for entry in config.frontends] or [config]:
        check_dpop_key(single)  # in the supervisor, before any worker starts
    if args.workers > 1 and config.session.store.startswith("memory:"):
        raise ConfigError(["session.store: memory:// keeps sessions inside one process; use Redis with --workers > 1"])
    if args.access_log:
        config = dataclasses.replace(config, logging=dataclasses.replace(config.logging, access_log=True))
    # uvicorn applies this document in the supervisor and again in every worker.
    log_config = serve_logging_config(config.logging, args.log_level)
    # uvicorn's own access line stays off: bff writes its own ([logging] access_log, bff.telemetry.access_log).
    settings = {**uvicorn_settings(config.server), "log_config": log_config, "access_log": False}
    with _metrics_listener(config, args.workers) as env:
        if args.workers > 1:
            # The workers, spawned with this environment, build their app with bff.app.app_from_env.
            os.environ.update(env)
            os.environ["BFF_CONFIG"] = os.path.abspath(config_path(args))
            if args.access_log:
                os.environ[ACCESS_LOG_ENV] = "1"
        return serve(config, workers=args.workers, settings=settings)


@contextlib.contextmanager
def _metrics_listener(config: Config, workers: int) -> Iterator[dict[str, str]]:
    """The Prometheus listener of ``[metrics] listen``, served by this process (the supervisor under --workers)."""
    address = config.metrics.address()
    if address is None:
        yield {}
        return
    from bff.telemetry.exposition import metrics_listener

    try:
        listener = metrics_listener(*address, workers=workers)
        env = listener.__enter__()
    except OSError as exc:
        raise ConfigError(
            [f"metrics.listen: cannot listen on {config.metrics.listen} ({exc.strerror or exc})"]
        ) from exc
    try:
        yield env
    finally:
        listener.__exit__(None, None, None)


def register(sub: SubParsers) -> None:
    serve = sub.add_parser("serve", help="run the proxy")
    serve.add_argument("--config", help="TOML config file (default: $BFF_CONFIG)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (needs a Redis store when > 1)")
    serve.add_argument("--listen", metavar="HOST:PORT", help="address to bind, instead of [server] listen (:PORT: all)")
    serve.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="default: [logging] level of the config"
    )
    serve.add_argument(
        "--access-log", action="store_true", help="one access line per request on stdout ([logging] access_log)"
    )
    serve.set_defaults(func=cmd_serve)
