"""``bff devidp``: run the DEVELOPMENT identity provider, or rotate its signing key.

    bff devidp [--port 9000] [--host 127.0.0.1] [--issuer URL] [--data-dir DIR] [--store URL] [--alg ES256|RS256]
               [--access-token-ttl 15m] [--client-id spa-bff] [--client-secret S] [--redirect-uri URL ...]
               [--post-logout-redirect-uri URL ...] [--backchannel-logout-uri URL] [--audience demo-api]
               [--refresh-reuse-grace 30s] [--exchange-audience demo-reports ...]
    bff devidp rotate-key [--data-dir DIR] [--alg ES256|RS256] [--keep-old-for 15m]

The client secret is ``--client-secret``, else ``$BFF_CLIENT_SECRET``, else generated and printed at start. Invalid
flags raise :class:`~bff.errors.ConfigError` (``bff`` prints every problem and exits 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bff.config.reader import parse_duration
from bff_devtools.devidp.keys import DEFAULT_KEEP_OLD_FOR, rotate_key
from bff_devtools.devidp.pages import BANNER
from bff_devtools.devidp.settings import ALGS, DEFAULT_DATA_DIR, TOKEN_EXCHANGE, ClientRegistration, DevIdPSettings

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

CLIENT_SECRET_ENV = "BFF_CLIENT_SECRET"  # noqa: S105 - the name of an environment variable
#: What the demo API's ``/reports`` accepts (``bff_devtools.demo.api``).
DEFAULT_EXCHANGE_AUDIENCE = "demo-reports"
BFF_ORIGIN = "http://localhost:8000"


def _duration(value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_devidp_parser(subparsers: SubParsers) -> None:
    """Register ``devidp`` (serve) and ``devidp rotate-key`` on ``bff``'s sub-command parsers."""
    parser = subparsers.add_parser(
        "devidp",
        help="run the DEVELOPMENT identity provider (not for production)",
        description=f"{BANNER}. An OpenID Provider for local development, demos and tests.",
    )
    parser.add_argument("--port", type=int, default=9000, help="listen port (default: 9000)")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default: 127.0.0.1)")
    parser.add_argument("--issuer", help="issuer URL (default: http://localhost:PORT)")
    parser.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR, help=f"signing keys (default: {DEFAULT_DATA_DIR})"
    )
    parser.add_argument("--store", default="memory://", help="memory:// or a Redis URL (default: memory://)")
    parser.add_argument("--alg", choices=ALGS, default="ES256", help="signing algorithm (default: ES256)")
    parser.add_argument("--access-token-ttl", type=_duration, default=900.0, help="e.g. 15m, 30s (default: 15m)")
    parser.add_argument("--client-id", default="spa-bff", help="the registered client (default: spa-bff)")
    parser.add_argument("--client-secret", help=f"default: ${CLIENT_SECRET_ENV}, else generated and printed")
    parser.add_argument("--redirect-uri", action="append", help=f"repeatable (default: {BFF_ORIGIN}/bff/callback)")
    parser.add_argument("--post-logout-redirect-uri", action="append", help=f"repeatable (default: {BFF_ORIGIN}/)")
    parser.add_argument(
        "--backchannel-logout-uri",
        default=f"{BFF_ORIGIN}/bff/backchannel-logout",
        help=f"'' for none (default: {BFF_ORIGIN}/bff/backchannel-logout)",
    )
    parser.add_argument("--audience", default="demo-api", help="aud of access tokens (default: demo-api)")
    parser.add_argument(
        "--exchange-audience",
        action="append",
        help="an audience the client may exchange the user's token for (RFC 8693); repeatable "
        f"(default: {DEFAULT_EXCHANGE_AUDIENCE}, the demo API's reports)",
    )
    parser.add_argument(
        "--refresh-reuse-grace",
        type=_duration,
        default=0.0,
        help="accept the refresh token the last rotation replaced once more within this window (e.g. 30s) and "
        "rotate again instead of revoking the family, like Auth0's reuse interval and Okta's grace period; "
        "0 keeps reuse detection strict (default: 0)",
    )
    parser.add_argument(
        "--dpop-nonce",
        action="store_true",
        help="demand a server nonce in DPoP proofs at the token endpoint (RFC 9449 8): use_dpop_nonce first",
    )
    parser.add_argument(
        "--require-dpop",
        action="store_true",
        help="refuse token requests without a DPoP proof (RFC 9449 5.2 dpop_bound_access_tokens): invalid_dpop_proof",
    )
    parser.add_argument("--ssl-certfile", help="serve https with this PEM certificate (and --ssl-keyfile)")
    parser.add_argument("--ssl-keyfile", help="the PEM private key of --ssl-certfile")
    parser.add_argument(
        "--ssl-ca-certs",
        help="ask TLS clients for a certificate (optional) chaining to these PEM CAs (RFC 8705 mutual TLS)",
    )
    parser.add_argument(
        "--tls-client-auth-subject-dn",
        help="the client authenticates with tls_client_auth: its certificate's subject, e.g. CN=bff (RFC 8705 2.1);"
        " its access tokens are bound to that certificate (cnf.x5t#S256, RFC 8705 3)",
    )
    parser.add_argument(
        "--client-jwks",
        type=Path,
        help="a JSON file with the client's public JWK Set: the client authenticates with private_key_jwt (RFC 7523)"
        " and its signed request objects (RFC 9101) are verified with it",
    )
    parser.add_argument(
        "--no-par", dest="par", action="store_false", help="no pushed authorization request endpoint (RFC 9126)"
    )
    parser.add_argument(
        "--require-par", action="store_true", help="accept authorization requests only when pushed (RFC 9126 5)"
    )
    parser.add_argument(
        "--require-signed-request-object",
        action="store_true",
        help="accept authorization requests only as signed request objects (RFC 9101)",
    )
    parser.add_argument(
        "--no-iss-parameter",
        dest="iss_parameter",
        action="store_false",
        help="leave iss out of authorization responses (RFC 9207), to test clients against such an IdP",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.set_defaults(func=cmd_devidp)

    commands = parser.add_subparsers(dest="devidp_command", metavar="{rotate-key}")
    rotate = commands.add_parser("rotate-key", help="sign with a new key; keep the old one published for a while")
    # Its own dest: a sub-parser's defaults would overwrite a --data-dir given before "rotate-key".
    rotate.add_argument("--data-dir", dest="key_data_dir", type=Path, help=f"default: {DEFAULT_DATA_DIR}")
    rotate.add_argument("--alg", dest="key_alg", choices=ALGS, help="default: the current key's")
    rotate.add_argument(
        "--keep-old-for", type=_duration, default=DEFAULT_KEEP_OLD_FOR, help="publish the old key this long (15m)"
    )
    rotate.set_defaults(func=cmd_rotate_key)


def build_settings(args: argparse.Namespace, environ: dict[str, str] | None = None) -> tuple[DevIdPSettings, bool]:
    """The settings ``args`` describe, and whether the client secret was generated (so it must be shown)."""
    env = os.environ if environ is None else environ
    secret = args.client_secret or env.get(CLIENT_SECRET_ENV)
    generated = not secret
    client = ClientRegistration(
        client_id=args.client_id,
        client_secret=secret or secrets.token_urlsafe(32),
        redirect_uris=tuple(args.redirect_uri or [f"{BFF_ORIGIN}/bff/callback"]),
        post_logout_redirect_uris=tuple(args.post_logout_redirect_uri or [f"{BFF_ORIGIN}/"]),
        backchannel_logout_uri=args.backchannel_logout_uri or None,
        grant_types=("authorization_code", "refresh_token", "client_credentials", TOKEN_EXCHANGE),
        exchange_audiences=tuple(args.exchange_audience or [DEFAULT_EXCHANGE_AUDIENCE]),
    )
    if args.tls_client_auth_subject_dn:
        client = dataclasses.replace(
            client,
            token_endpoint_auth_method="tls_client_auth",  # noqa: S106 - a method name, not a password
            tls_client_auth_subject_dn=args.tls_client_auth_subject_dn,
            tls_client_certificate_bound_access_tokens=True,
        )
    if args.client_jwks:
        client = dataclasses.replace(
            client,
            token_endpoint_auth_method="private_key_jwt",  # noqa: S106 - a method name, not a password
            jwks=_read_jwks(args.client_jwks),
        )
    scheme = "https" if args.ssl_certfile else "http"
    settings = DevIdPSettings(
        issuer=args.issuer or f"{scheme}://localhost:{args.port}",
        data_dir=args.data_dir,
        store_url=args.store,
        alg=args.alg,
        access_token_ttl=args.access_token_ttl,
        audience=args.audience,
        clients=(client,),
        refresh_reuse_grace=args.refresh_reuse_grace,
        dpop_nonce=args.dpop_nonce,
        require_dpop=args.require_dpop,
        par=args.par,
        require_pushed_authorization_requests=args.require_par,
        require_signed_request_object=args.require_signed_request_object,
        iss_parameter=args.iss_parameter,
    )
    return settings, generated


def _read_jwks(path: Path) -> dict[str, Any]:
    from bff.errors import ConfigError

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError([f"--client-jwks: cannot read a JSON JWK Set from {path} ({exc})"]) from exc
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ConfigError([f"--client-jwks: {path} is not a JWK Set (an object with keys)"])
    return data


def banner(settings: DevIdPSettings, *, show_secret: bool) -> str:
    client = settings.clients[0]
    secret = client.client_secret if show_secret else f"(from --client-secret or ${CLIENT_SECRET_ENV})"
    grace = settings.refresh_reuse_grace
    reuse = f"a replaced one is accepted again for {grace:g}s" if grace else "reuse revokes the family"
    users = ", ".join(f"{u.username} / {u.demo_password} ({u.role})" for u in settings.users if u.demo_password)
    return "\n".join(
        [
            BANNER,
            f"  issuer:        {settings.issuer}",
            f"  discovery:     {settings.issuer}/.well-known/openid-configuration",
            f"  admin page:    {settings.issuer}/admin",
            f"  client:        {client.client_id}, secret {secret}",
            f"  redirect URIs: {', '.join(client.redirect_uris)}",
            f"  demo users:    {users}",
            f"  signing keys:  {settings.data_dir} ({settings.alg})",
            f"  refresh:       tokens rotated; {reuse}",
            "",
        ]
    )


def cmd_devidp(args: argparse.Namespace) -> int:
    import uvicorn

    from bff.telemetry.logs import configure_logging
    from bff_devtools.devidp.app import create_devidp_app

    settings, generated = build_settings(args)
    configure_logging(args.log_level)
    sys.stdout.write(banner(settings, show_secret=generated))
    sys.stdout.flush()
    uvicorn.run(
        create_devidp_app(settings),
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        server_header=False,
        **tls_settings(args),
    )
    return 0


def tls_settings(args: argparse.Namespace) -> dict[str, Any]:
    """uvicorn's TLS settings for ``--ssl-*``: client certificates optional, and shown to the app through the ASGI
    TLS extension, which uvicorn does not fill in (``bff_devtools.devidp.mtls.TLSScopeProtocol`` does)."""
    if not args.ssl_certfile:
        return {}
    import ssl

    from bff.config import ServerSettings
    from bff.serving.limits import EdgeLimits
    from bff_devtools.devidp.mtls import TLSScopeProtocol

    settings: dict[str, Any] = {"ssl_certfile": args.ssl_certfile, "ssl_keyfile": args.ssl_keyfile}
    if args.ssl_ca_certs:
        settings.update(
            ssl_ca_certs=args.ssl_ca_certs,
            ssl_cert_reqs=ssl.CERT_OPTIONAL,
            http=functools.partial(TLSScopeProtocol, limits=EdgeLimits.of(ServerSettings())),
        )
    return settings


def cmd_rotate_key(args: argparse.Namespace) -> int:
    data_dir = args.key_data_dir or args.data_dir
    kid = rotate_key(data_dir, alg=args.key_alg, keep_old_for=args.keep_old_for)
    sys.stdout.write(
        f"{data_dir}: now signing with {kid}; the previous key stays published for {args.keep_old_for:g}s\n"
    )
    return 0
