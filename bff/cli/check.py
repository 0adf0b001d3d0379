"""``bff check``: validate the config, and say what ``bff serve`` would bind (``--explain``: every effective
setting and where it came from)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import TYPE_CHECKING

from bff.cli.common import check_dpop_key, config_path, load
from bff.config import Config, explain_config
from bff.config.frontends import frontend_config, oidc_key
from bff.config.server import describe_listen
from bff.errors import BffError, ConfigError

if TYPE_CHECKING:
    from bff.cli.common import SubParsers


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
        sys.stdout.write("".join(line + "\n" for line in explain_config(config_path(args))))
        return 0
    from bff.client_tls import check_client_certificates
    from bff.upstream.proxy import proxy_from_environment

    config = load(args)
    frontends = [(entry, frontend_config(config, entry)) for entry in config.frontends]
    for name, single in [(entry.name, one) for entry, one in frontends] or [("", config)]:
        check_client_certificates(single)
        for route in single.routes:
            if route.proxy is None:
                proxy_from_environment(route.upstream, os.environ)  # raises ConfigError for an unusable *_PROXY
        check_dpop_key(single)
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


def register(sub: SubParsers) -> None:
    check = sub.add_parser("check", help="validate the config and exit (2 when invalid)")
    check.add_argument("--config", help="TOML config file (default: $BFF_CONFIG)")
    check.add_argument(
        "--explain",
        action="store_true",
        help="print every effective setting and where it came from (file:line, env variable, default); secrets masked",
    )
    check.add_argument("--listen", metavar="HOST:PORT", help="as for serve: show what it would bind")
    check.set_defaults(func=cmd_check)
