"""The demo's subcommands, registered on ``bff``'s parser by :func:`add_demo_parser` and :func:`add_demo_api_parser`
(entry points of the ``bff.commands`` group):

    bff demo [--port 8000] [--idp-port 9000] [--api-port 9100] [--host 127.0.0.1] [--check | --doctor]
             the IdP, the demo API and bff with the demo SPA, in one process (REDIS_URL=... for Redis)
    bff demo-api [--port 9100] [--host 127.0.0.1] [--issuer http://localhost:9000] [--audience demo-api]
             the demo API alone (a resource server verifying the IdP's JWT access tokens)

Heavy imports happen inside the commands, so ``bff serve`` does not pay for the demo.
"""

from __future__ import annotations

import argparse
import asyncio

from bff.config.reader import parse_duration


def _port(value: str) -> int:
    port = int(value)
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"not a TCP port: {value}")
    return port


def _seconds(value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def cmd_demo(args: argparse.Namespace) -> int:
    from bff.telemetry.logs import configure_logging
    from bff_devtools.demo.run import DemoOptions, run_demo

    configure_logging(args.log_level)
    options = DemoOptions.from_env(
        port=args.port,
        idp_port=args.idp_port,
        api_port=args.api_port,
        host=args.host,
        access_token_ttl=args.access_token_ttl,
        refresh_reuse_grace=args.refresh_reuse_grace,
        dpop=args.dpop,
    )
    try:
        if args.doctor:
            return asyncio.run(run_demo(options, check=True, doctor=True))
        return asyncio.run(run_demo(options, check=args.check))
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down
        return 130


def cmd_demo_api(args: argparse.Namespace) -> int:
    import uvicorn

    from bff.telemetry.logs import configure_logging
    from bff_devtools.demo.api import DemoApiSettings, create_demo_api

    configure_logging(args.log_level)
    app = create_demo_api(DemoApiSettings(issuer=args.issuer, audience=args.audience, dpop_nonce=args.dpop_nonce))
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, server_header=False, proxy_headers=False)
    return 0


def add_demo_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``demo`` to ``bff``'s subcommands."""
    demo = subparsers.add_parser(
        "demo",
        help="run the reference IdP, the demo API and bff with the demo SPA in one process",
        description="Runs the whole system: open http://localhost:PORT. REDIS_URL=redis://... stores sessions and "
        "IdP state in Redis; BFF_SESSION_KEY and BFF_CLIENT_SECRET fix the otherwise random secrets.",
    )
    demo.add_argument("--port", type=_port, default=8000, help="bff, serving the SPA (default 8000)")
    demo.add_argument("--idp-port", type=_port, default=9000, help="the reference IdP (default 9000)")
    demo.add_argument("--api-port", type=_port, default=9100, help="the demo API (default 9100)")
    demo.add_argument("--host", default="127.0.0.1", help="listen address of all three (default 127.0.0.1)")
    demo.add_argument(
        "--access-token-ttl", type=_seconds, default=60.0, help="access token lifetime, e.g. 60s or 15m (default 60s)"
    )
    demo.add_argument(
        "--refresh-reuse-grace",
        type=_seconds,
        default=0.0,
        help="the IdP accepts a just-rotated refresh token once more within this window (e.g. 30s) instead of "
        "revoking its family; 0 keeps reuse detection strict (default 0)",
    )
    demo.add_argument(
        "--dpop",
        action="store_true",
        help="DPoP (RFC 9449): tokens bound to a key bff makes for this run, a signed proof on every API call",
    )
    demo.add_argument("--check", action="store_true", help="start, verify all three are ready, print OK, exit 0")
    demo.add_argument(
        "--doctor",
        action="store_true",
        help="start, run `bff doctor` against the demo (its config, --url its origin), exit with its code",
    )
    demo.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    demo.set_defaults(func=cmd_demo)


def add_demo_api_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``demo-api`` to ``bff``'s subcommands."""
    api = subparsers.add_parser("demo-api", help="run the demo API (a resource server for the IdP's access tokens)")
    api.add_argument("--port", type=_port, default=9100, help="default 9100")
    api.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1; 0.0.0.0 in a container)")
    api.add_argument("--issuer", default="http://localhost:9000", help="the IdP whose tokens are accepted")
    api.add_argument("--audience", default="demo-api", help="the aud access tokens must carry (default demo-api)")
    api.add_argument(
        "--dpop-nonce", action="store_true", help="demand a server nonce in DPoP proofs (RFC 9449 9): use_dpop_nonce"
    )
    api.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    api.set_defaults(func=cmd_demo_api)
