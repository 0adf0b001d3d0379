"""``bff``: the command line.

    bff serve [--config PATH] [--workers N] [--listen HOST:PORT]
                                              run the proxy (config from --config or $BFF_CONFIG); stops
                                              gracefully on SIGTERM/SIGINT (drain, then exit 0)
    bff check [--config PATH] [--explain] [--listen HOST:PORT]
                                              validate the config; print every problem; exit 2 if any; else
                                              say what ``bff serve`` would bind; --explain: every effective
                                              setting and where it came from
    bff doctor [--config PATH] [--url ORIGIN] [--json] [--strict] [--timeout SECONDS] [--frontend NAME]
                                              conformance self-check (IdP, client registration, Redis, upstreams,
                                              with --url the deployment's browser contract); exit 1 on a FAIL
                                              (--strict: on a WARN too); docs/doctor.md
    bff sessions list --sub SUB [--config PATH] [--json] [--frontend NAME]
                                              the user's live sessions (handle, clocks, IdP sid; never a token)
    bff sessions revoke --sub SUB [--config PATH] [--frontend NAME]
                                              log the user out everywhere: revoke the refresh tokens at the IdP,
                                              delete every session (all instances sharing the store)

Installed tools add commands through entry points of the ``bff.commands`` group (name: the command; object: a
function that adds its parser to bff's subparsers). ``bff --help`` lists them by name; only the command that runs
is imported, so the product's commands never load them. bff-devtools (``devtools/``) adds ``bff demo``,
``bff demo-api`` and ``bff devidp``.

Exit codes: 0 success, 1 the session store could not be reached (``bff doctor``: a check failed), 2 invalid
configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from bff import __version__
from bff.config import Config, explain_config, load_config
from bff.config.frontends import find_frontend, frontend_config, oidc_key, store_namespace
from bff.config.server import describe_listen, parse_listen
from bff.errors import EXIT_CONFIG, BffError, ConfigError

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]
    from bff.oidc.provider import IdentityProvider
    from bff.session.manager import SessionManager
    from bff.sessions_admin import RevokeReport, SessionListing

_T = TypeVar("_T")

EXIT_UNAVAILABLE = 1


def _config_path(args: argparse.Namespace) -> str:
    path: str | None = args.config or os.environ.get("BFF_CONFIG")
    if not path:
        raise ConfigError(["no configuration: pass --config PATH or set BFF_CONFIG"])
    return path


def _load(args: argparse.Namespace) -> Config:
    config = load_config(_config_path(args))
    listen: str | None = getattr(args, "listen", None)
    if listen is None:
        return config
    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        raise ConfigError([f"--listen: {exc}"]) from exc
    return dataclasses.replace(config, server=dataclasses.replace(config.server, host=host, port=port))


def _check_dpop_key(config: Config) -> None:
    """Raises ConfigError unless ``[oidc] dpop_key_file`` holds a usable key (when DPoP is on)."""
    if config.oidc.dpop and config.oidc.dpop_key_file:
        from bff.oidc.dpop import load_dpop_key

        load_dpop_key(config.oidc.dpop_key_file)


def _check_idp_metadata(config: Config, key: str = "oidc") -> None:
    """With ``[oidc] profile = "fapi2"``, ``par = "required"`` or ``request_object = "always"``, starting depends on
    the IdP's metadata: fetch it and raise ConfigError, one line per missing capability, as ``bff serve`` would. An
    IdP that cannot be reached is only reported (``bff serve`` waits for it too)."""
    oidc = config.oidc
    if oidc.profile == "none" and oidc.par != "required" and oidc.request_object != "always":
        return
    from bff.app import create_dpop
    from bff.idp_http import create_idp_client, idp_client_cert
    from bff.oidc.provider import IdentityProvider
    from bff.types import system_clock

    async def load() -> None:
        http = create_idp_client(timeout=oidc.timeout, ca_bundle=oidc.ca_bundle, client_cert=idp_client_cert(oidc))
        try:
            await IdentityProvider(oidc, http, dpop=create_dpop(config, system_clock), config_key=key).load()
        finally:
            await http.aclose()

    try:
        asyncio.run(load())
    except ConfigError:
        raise
    except BffError as exc:
        sys.stderr.write(f"warning: the identity provider's metadata was not checked: {exc.message}\n")


def cmd_check(args: argparse.Namespace) -> int:
    if args.explain:
        sys.stdout.write("".join(line + "\n" for line in explain_config(_config_path(args))))
        return 0
    from bff.client_tls import check_client_certificates
    from bff.upstream.proxy import proxy_from_environment

    config = _load(args)
    frontends = [(entry, frontend_config(config, entry)) for entry in config.frontends]
    for name, single in [(entry.name, one) for entry, one in frontends] or [("", config)]:
        check_client_certificates(single)
        for route in single.routes:
            if route.proxy is None:
                proxy_from_environment(route.upstream, os.environ)  # raises ConfigError for an unusable *_PROXY
        _check_dpop_key(single)
        _check_idp_metadata(single, oidc_key(name))
    routes = sum(len(one.routes) for _, one in frontends) if frontends else len(config.routes)
    count = f"{len(frontends)} frontend(s), " if frontends else ""
    store, listen = config.session.store.split("://")[0], describe_listen(config.server.host, config.server.port)
    sys.stdout.write(f"{config.source}: OK ({count}{routes} route(s), store {store}://, listen {listen})\n")
    for entry, one in frontends:
        selector = (entry.host or "any host") + (entry.path_prefix or "")
        sys.stdout.write(
            f"  frontend {entry.name}: {selector} -> {entry.public_origin}, cookie {entry.cookie_name}, "
            f"issuer {entry.oidc.issuer}, {len(one.routes)} route(s)\n"
        )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import dataclasses

    from bff.app import ACCESS_LOG_ENV
    from bff.serving import serve, uvicorn_settings
    from bff.telemetry.logs import serve_logging_config

    config = _load(args)
    for single in [frontend_config(config, entry) for entry in config.frontends] or [config]:
        _check_dpop_key(single)  # in the supervisor, before any worker starts
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
            os.environ["BFF_CONFIG"] = os.path.abspath(_config_path(args))
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


def cmd_doctor(args: argparse.Namespace) -> int:
    from bff.doctor import is_ok, render_json, render_table, run_doctor

    config = _load(args)
    checks = asyncio.run(run_doctor(config, url=args.url, call_timeout=args.timeout, frontend=args.frontend))
    if args.json:
        sys.stdout.write(render_json(checks, strict=args.strict))
    else:
        sys.stdout.write(render_table(checks, colour=sys.stdout.isatty() and "NO_COLOR" not in os.environ))
    return 0 if is_ok(checks, strict=args.strict) else EXIT_UNAVAILABLE


# --- bff sessions ----------------------------------------------------------------------------------------------------


def _load_shared_store_config(args: argparse.Namespace) -> tuple[Config, str]:
    """The config as one frontend's instances see it (``--frontend`` with ``[[frontends]]``), and its name."""
    config = _load(args)
    if config.session.store.startswith("memory:"):
        raise ConfigError(
            [
                "session.store: memory:// keeps sessions inside the bff process; `bff sessions` acts on a shared "
                "store (Redis), so pass the --config of the bff instances whose sessions you mean"
            ]
        )
    return _one_frontend(config, args.frontend or "")


def _one_frontend(config: Config, name: str) -> tuple[Config, str]:
    """``--frontend NAME``: the single-frontend view of that ``[[frontends]]`` entry (required with them)."""
    if not config.frontends:
        if name:
            raise ConfigError(["--frontend: this config has no [[frontends]]"])
        return config, ""
    entry = find_frontend(config, name)
    if entry is None:
        names = ", ".join(e.name for e in config.frontends)
        raise ConfigError([f"--frontend: {'required' if not name else f'no frontend {name!r}'} (one of: {names})"])
    return frontend_config(config, entry), name


@contextlib.asynccontextmanager
async def _admin_services(config: Config, frontend: str) -> AsyncIterator[tuple[SessionManager, IdentityProvider]]:
    """The store and the IdP as the running instances see them (same store, same key ring); closed at the end."""
    from bff.app import create_store
    from bff.client_tls import check_client_certificates
    from bff.idp_http import create_idp_client, idp_client_cert
    from bff.oidc.provider import IdentityProvider
    from bff.session.manager import SessionManager

    check_client_certificates(config)  # the IdP client loads [oidc] client_cert: its problems named, as at start

    try:
        store = create_store(config)
    except ValueError as exc:
        raise ConfigError([f"session.store: {exc}"]) from exc
    try:
        http = create_idp_client(
            timeout=config.oidc.timeout, ca_bundle=config.oidc.ca_bundle, client_cert=idp_client_cert(config.oidc)
        )
        try:
            prefix = store_namespace(frontend) if frontend else ""
            sessions = SessionManager(store, config.session, prefix=prefix, frontend=frontend)
            yield sessions, IdentityProvider(config.oidc, http)
        finally:
            await http.aclose()
    finally:
        await store.aclose()


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _print_listing(listing: SessionListing, *, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(listing.to_json(), indent=2) + "\n")
        return
    lines = [
        f"# {len(listing.sessions)} live session(s) of {listing.sub}; times UTC; "
        "LAST SEEN is approximate (derived from the store TTL and the idle timeout: at least this recent)",
        f"{'HANDLE':<12}  {'CREATED':<20}  {'LAST SEEN (APPROX.)':<20}  {'EXPIRES':<20}  IDP SID",
    ]
    lines.extend(
        f"{s.handle:<12}  {_utc(s.created_at):<20}  {_utc(s.last_seen):<20}  {_utc(s.expires_at):<20}  {s.sid or '-'}"
        for s in listing.sessions
    )
    sys.stdout.write("\n".join(lines) + "\n")
    if listing.unreadable:
        sys.stderr.write(
            f"bff: warning: {listing.unreadable} session record(s) of {listing.sub} do not decrypt with this "
            "config's session.keys or are in a store format of a newer release (not shown)\n"
        )


def _print_report(report: RevokeReport) -> None:
    for failure in report.failures:
        sys.stderr.write(f"bff: warning: {failure}\n")
    if report.unreadable:
        sys.stderr.write(
            f"bff: warning: {report.unreadable} session record(s) did not decrypt with this config's session.keys"
            " or are in a store format of a newer release: deleted, but their refresh tokens could not be revoked\n"
        )
    sys.stdout.write(
        f"revoked {report.deleted + report.unreadable} session(s) of {report.sub} "
        f"({report.revoked} refresh token(s) revoked at the identity provider)\n"
    )


def _run_admin(
    config: Config, frontend: str, action: Callable[[SessionManager, IdentityProvider], Awaitable[_T]]
) -> _T:
    async def run() -> _T:
        async with _admin_services(config, frontend) as (sessions, idp):
            return await action(sessions, idp)

    return asyncio.run(run())


def cmd_sessions_list(args: argparse.Namespace) -> int:
    from bff.sessions_admin import list_sessions

    config, frontend = _load_shared_store_config(args)
    try:
        listing = _run_admin(config, frontend, lambda sessions, _: list_sessions(sessions, args.sub))
    except ConfigError:
        raise
    except BffError as exc:  # the store did not answer
        sys.stderr.write(f"bff: {exc.message}\n")
        return EXIT_UNAVAILABLE
    _print_listing(listing, as_json=args.json)
    return 0


def cmd_sessions_revoke(args: argparse.Namespace) -> int:
    from bff.sessions_admin import revoke_sessions

    config, frontend = _load_shared_store_config(args)
    try:
        report = _run_admin(config, frontend, lambda sessions, idp: revoke_sessions(sessions, idp, args.sub))
    except ConfigError:
        raise
    except BffError as exc:  # the store did not answer (IdP failures are in the report)
        sys.stderr.write(f"bff: {exc.message}\n")
        return EXIT_UNAVAILABLE
    _print_report(report)
    return 0


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds <= 300:
        raise argparse.ArgumentTypeError(f"expected seconds between 0 and 300, got {value!r}")
    return seconds


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """bff's parser; ``argv``, when given, is the command line it is for (see :func:`_add_plugin_commands`)."""
    parser = argparse.ArgumentParser(prog="bff", description="Backend-for-Frontend reverse proxy")
    parser.add_argument("--version", action="version", version=f"bff {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

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

    check = sub.add_parser("check", help="validate the config and exit (2 when invalid)")
    check.add_argument("--config", help="TOML config file (default: $BFF_CONFIG)")
    check.add_argument(
        "--explain",
        action="store_true",
        help="print every effective setting and where it came from (file:line, env variable, default); secrets masked",
    )
    check.add_argument("--listen", metavar="HOST:PORT", help="as for serve: show what it would bind")
    check.set_defaults(func=cmd_check)

    doctor = sub.add_parser("doctor", help="check the IdP, client, Redis, upstreams and deployment before going live")
    doctor.add_argument("--config", help="TOML config file (default: $BFF_CONFIG)")
    doctor.add_argument("--url", help="the running deployment's origin, e.g. https://app.example.com")
    doctor.add_argument("--frontend", help="with [[frontends]]: check only this frontend (default: every one)")
    doctor.add_argument("--json", action="store_true", help="machine-readable output (schema: docs/doctor.md)")
    doctor.add_argument("--strict", action="store_true", help="exit 1 on a WARN too")
    doctor.add_argument("--timeout", type=_seconds, default=5.0, help="seconds per network call (default 5)")
    doctor.set_defaults(func=cmd_doctor)

    sessions = sub.add_parser("sessions", help="list or revoke a user's sessions (acts on the shared store)")
    sessions_sub = sessions.add_subparsers(dest="sessions_command", required=True)
    listing = sessions_sub.add_parser("list", help="the user's live sessions; never shows a token")
    listing.add_argument("--sub", required=True, help="the user's subject identifier (the ID token's sub)")
    listing.add_argument("--config", help="TOML config file of the bff instances (default: $BFF_CONFIG)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.add_argument("--frontend", help="with [[frontends]]: the frontend whose sessions (its name)")
    listing.set_defaults(func=cmd_sessions_list)
    revoke = sessions_sub.add_parser("revoke", help="log the user out everywhere")
    revoke.add_argument("--sub", required=True, help="the user's subject identifier (the ID token's sub)")
    revoke.add_argument("--config", help="TOML config file of the bff instances (default: $BFF_CONFIG)")
    revoke.add_argument("--frontend", help="with [[frontends]]: the frontend whose sessions (its name)")
    revoke.set_defaults(func=cmd_sessions_revoke)

    _add_plugin_commands(sub, argv)
    return parser


def _add_plugin_commands(sub: SubParsers, argv: Sequence[str] | None) -> None:
    """The ``bff.commands`` entry points: the one ``argv`` runs is loaded, the others only named (all are loaded
    when ``argv`` is None, for callers that parse several command lines with one parser)."""
    from importlib.metadata import entry_points

    command = next((arg for arg in argv if not arg.startswith("-")), None) if argv is not None else None
    for entry in sorted(entry_points(group="bff.commands"), key=lambda e: e.name):
        if entry.name in sub.choices:
            continue  # a tool may not replace a product command
        if argv is None or entry.name == command:
            register: Callable[[SubParsers], None] = entry.load()
            register(sub)
        else:
            origin = entry.dist.name if entry.dist is not None else entry.module
            sub.add_parser(entry.name, help=f"({origin}) see: bff {entry.name} --help", add_help=False)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        sys.stderr.write(f"bff: {exc.message}\n")
        return EXIT_CONFIG
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
