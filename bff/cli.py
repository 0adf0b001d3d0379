"""``bff``: the command line.

    bff serve [--config PATH] [--workers N]   run the proxy (config from --config or $BFF_CONFIG)
    bff check [--config PATH]                 validate the config; print every problem; exit 2 if any

Exit codes: 0 success, 2 invalid configuration or usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from bff import __version__
from bff.config import Config, load_config
from bff.errors import ConfigError

EXIT_CONFIG = 2


def _config_path(args: argparse.Namespace) -> str:
    path: str | None = args.config or os.environ.get("BFF_CONFIG")
    if not path:
        raise ConfigError(["no configuration: pass --config PATH or set BFF_CONFIG"])
    return path


def _load(args: argparse.Namespace) -> Config:
    return load_config(_config_path(args))


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args)
    sys.stdout.write(
        f"{config.source}: OK ({len(config.routes)} route(s), store {config.session.store.split('://')[0]}://)\n"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from bff.app import BffApp
    from bff.observability import configure_logging

    config = _load(args)
    if args.workers > 1 and config.session.store.startswith("memory:"):
        raise ConfigError(["session.store: memory:// keeps sessions inside one process; use Redis with --workers > 1"])
    configure_logging(args.log_level)
    common = {
        "host": config.server.host,
        "port": config.server.port,
        "log_config": None,
        "proxy_headers": False,
        "server_header": False,
        "access_log": args.access_log,
    }
    if args.workers > 1:
        os.environ["BFF_CONFIG"] = os.path.abspath(_config_path(args))
        uvicorn.run("bff.app:app_from_env", factory=True, workers=args.workers, **common)
    else:
        uvicorn.run(BffApp(config), **common)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bff", description="Backend-for-Frontend reverse proxy")
    parser.add_argument("--version", action="version", version=f"bff {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the proxy")
    serve.add_argument("--config", help="TOML config file (default: $BFF_CONFIG)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (needs a Redis store when > 1)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--access-log", action="store_true", help="log every request (tokens are redacted)")
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check", help="validate the config and exit (2 when invalid)")
    check.add_argument("--config", help="TOML config file (default: $BFF_CONFIG)")
    check.set_defaults(func=cmd_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        sys.stderr.write(f"bff: {exc.message}\n")
        return EXIT_CONFIG
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
