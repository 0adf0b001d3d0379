"""``bff sessions list|revoke --sub SUB``: one user's sessions in the shared store, listed (handle, clocks, IdP
``sid``; never a token) or ended everywhere with their refresh tokens revoked (the operations are
``bff.sessions_admin``'s)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from bff.cli.common import EXIT_UNAVAILABLE, load, one_frontend
from bff.config import Config
from bff.config.frontends import store_namespace
from bff.errors import BffError, ConfigError

if TYPE_CHECKING:
    from bff.cli.common import SubParsers
    from bff.oidc.provider import IdentityProvider
    from bff.session.manager import SessionManager
    from bff.sessions_admin import RevokeReport, SessionListing

_T = TypeVar("_T")


def _load_shared_store_config(args: argparse.Namespace) -> tuple[Config, str]:
    """The config as one frontend's instances see it (``--frontend`` with ``[[frontends]]``), and its name."""
    config = load(args)
    if config.session.store.startswith("memory:"):
        raise ConfigError(
            [
                "session.store: memory:// keeps sessions inside the bff process; `bff sessions` acts on a shared "
                "store (Redis), so pass the --config of the bff instances whose sessions you mean"
            ]
        )
    return one_frontend(config, args.frontend or "")


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


def register(sub: SubParsers) -> None:
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
