"""``bff demo``: the whole system in one process. The reference IdP, the demo API and bff (serving the demo SPA)
run as three uvicorn servers on one event loop, wired to each other:

    browser -> bff http://localhost:8000  (the SPA, /bff/*, /api/* -> the demo API with the user's token;
                                           /api/reports with a token exchanged for audience demo-reports)
            -> IdP http://localhost:9000  (login form, admin page; back-channel logout -> bff)
    bff     -> API http://127.0.0.1:9100  (verifies the IdP's JWTs, checks its jti blocklist)

Sessions and IdP state live in memory unless ``REDIS_URL`` is set (then both use that Redis). The session key and
the client secret are random for each run unless ``BFF_SESSION_KEY`` / ``BFF_CLIENT_SECRET`` are set. Access tokens
live 60 s by default, so bff's refreshes are visible in the SPA within a minute.

``check=True`` starts everything, waits until all three answer (bff ``/readyz``, the IdP's discovery document,
the API's ``/healthz``), prints ``OK`` and stops: the smoke test of CI. ``doctor=True`` runs ``bff doctor``
against the three instead (exit 1 on a FAIL). SIGINT and SIGTERM stop all three
servers gracefully.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn

from bff.config import Config, ServerSettings, parse_config
from bff.errors import ConfigError
from bff.serving import uvicorn_settings
from bff.types import ASGIApp
from bff_devtools.acr import ACR_MFA, ACR_PWD

#: The demo SPA, shipped in the wheel as package data.
SPA_DIR = Path(__file__).resolve().parent / "spa"
CLIENT_ID = "spa-bff"
#: The audience of the demo's reports API; bff exchanges the user's token for one (RFC 8693).
REPORTS_AUDIENCE = "demo-reports"
EXIT_FAILED = 1


@dataclass(frozen=True)
class DemoOptions:
    port: int = 8000
    idp_port: int = 9000
    api_port: int = 9100
    #: The address the three servers listen on (loopback: the demo's URLs say localhost).
    host: str = "127.0.0.1"
    redis_url: str | None = None
    session_key: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    access_token_ttl: float = 60.0
    #: The IdP's refresh-token reuse grace window (0: a replayed refresh token revokes its family at once).
    refresh_reuse_grace: float = 0.0
    #: DPoP (RFC 9449): bff binds the tokens to a key made for this run, the demo API checks a proof per call.
    dpop: bool = False
    #: How long ``check`` (and startup) waits for the three servers.
    ready_timeout: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, **overrides: object) -> DemoOptions:
        """Options with ``REDIS_URL``, ``BFF_SESSION_KEY`` and ``BFF_CLIENT_SECRET`` from ``env`` when set."""
        values: dict[str, object] = {}
        if env.get("REDIS_URL"):
            values["redis_url"] = env["REDIS_URL"]
        if env.get("BFF_SESSION_KEY"):
            values["session_key"] = env["BFF_SESSION_KEY"]
        if env.get("BFF_CLIENT_SECRET"):
            values["client_secret"] = env["BFF_CLIENT_SECRET"]
        return cls(**{**values, **overrides})  # type: ignore[arg-type]

    @property
    def public_origin(self) -> str:
        return f"http://localhost:{self.port}"

    @property
    def issuer(self) -> str:
        return f"http://localhost:{self.idp_port}"

    @property
    def local_host(self) -> str:
        """Where this process reaches its own servers."""
        return "127.0.0.1" if self.host in ("", "0.0.0.0", "localhost") else self.host  # noqa: S104 - a comparison

    @property
    def api_url(self) -> str:
        return f"http://{self.local_host}:{self.api_port}"

    @property
    def store(self) -> str:
        return self.redis_url or "memory://"


def build_bff_config(options: DemoOptions, *, dpop_key_file: Path | None = None) -> Config:
    """bff's configuration for the demo, built in code and validated like a TOML file; DPoP with the key in
    ``dpop_key_file`` when given."""
    origin = options.public_origin
    document = {
        "server": {"listen": f"{options.host}:{options.port}", "public_origin": origin},
        "session": {"store": options.store, "keys": [options.session_key]},
        "oidc": {
            "issuer": options.issuer,
            "client_id": CLIENT_ID,
            "client_secret": options.client_secret,
            "scopes": ["openid", "profile", "email", "offline_access"],
            "post_logout_redirect_uri": origin + "/",
            "id_token_signing_algs": ["ES256", "RS256"],
            # acr and auth_time show a step-up (RFC 9470) in /bff/user; the IdP knows these two levels.
            "user_claims": ["sub", "name", "preferred_username", "email", "email_verified", "role", "acr", "auth_time"],
            "acr_values_allowed": [ACR_PWD, ACR_MFA],
        },
        "routes": [
            # Longest prefix wins: the API's public info needs no login (token = "none"), everything else does.
            {"path": "/api/public", "upstream": options.api_url + "/public", "token": "none", "methods": ["GET"]},
            # The reports API accepts only tokens for its own audience: bff exchanges the user's (RFC 8693).
            {
                "path": "/api/reports",
                "upstream": options.api_url + "/reports",
                "token": "user",
                "exchange": {"audience": REPORTS_AUDIENCE},
            },
            # WebSockets too (/api/live): the handshake carries the user's token, a logout closes the socket.
            # The live ticker's socket needs a bearer token: bff sends no DPoP proof on a WebSocket handshake yet.
            {
                "path": "/api",
                "upstream": options.api_url,
                "token": "user",
                "timeout": "30s",
                "websocket": dpop_key_file is None,
            },
        ],
        "frontend": {"directory": str(SPA_DIR)},
    }
    if dpop_key_file is not None:
        document["oidc"].update(dpop=True, dpop_key_file=str(dpop_key_file))  # type: ignore[attr-defined]
    return parse_config(document, env={}, source="<bff demo>")


def build_apps(options: DemoOptions, data_dir: Path) -> tuple[ASGIApp, ASGIApp, ASGIApp]:
    """The IdP, the demo API and bff, configured for each other."""
    from bff.app import BffApp
    from bff_devtools.demo.api import DemoApiSettings, create_demo_api
    from bff_devtools.devidp import ClientRegistration, DevIdPSettings, create_devidp_app
    from bff_devtools.devidp.settings import TOKEN_EXCHANGE

    origin = options.public_origin
    client = ClientRegistration(
        client_id=CLIENT_ID,
        client_secret=options.client_secret,
        redirect_uris=(origin + "/bff/callback",),
        post_logout_redirect_uris=(origin + "/",),
        backchannel_logout_uri=origin + "/bff/backchannel-logout",
        grant_types=("authorization_code", "refresh_token", TOKEN_EXCHANGE),
        exchange_audiences=(REPORTS_AUDIENCE,),
    )
    idp = create_devidp_app(
        DevIdPSettings(
            issuer=options.issuer,
            data_dir=data_dir,
            store_url=options.store,
            access_token_ttl=options.access_token_ttl,
            refresh_reuse_grace=options.refresh_reuse_grace,
            clients=(client,),
        )
    )
    api = create_demo_api(
        DemoApiSettings(
            issuer=options.issuer,
            audience="demo-api",
            reports_audience=REPORTS_AUDIENCE,
            dpop_required=options.dpop,
        )
    )
    key_file = None
    if options.dpop:
        from joserfc.jwk import ECKey

        key_file = data_dir / "bff-dpop-key.pem"  # lives as long as the run's data directory
        key_file.write_bytes(ECKey.generate_key("P-256", private=True).as_pem(private=True))
        key_file.chmod(0o600)
    return idp, api, BffApp(build_bff_config(options, dpop_key_file=key_file))


class _Server(uvicorn.Server):
    """Three servers share one loop: signals are handled once, by :func:`run_demo`, not by each server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int, what: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError([f"{what}: cannot listen on {host}:{port} ({exc.strerror}); choose another port"]) from exc
    return sock


def _server(app: ASGIApp, server: ServerSettings) -> _Server:
    config = uvicorn.Config(
        app,
        **{
            **uvicorn_settings(server),  # as under ``bff serve``
            "loop": "none",  # the three servers share the running loop
            "lifespan": "on",
            "log_config": None,
            "access_log": False,
            "timeout_graceful_shutdown": 3,
        },
    )
    return _Server(config)


async def _wait_until_ok(client: httpx.AsyncClient, url: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if (await client.get(url)).status_code == 200:
                return True
        await asyncio.sleep(0.1)
    return False


def _banner(options: DemoOptions) -> str:
    from bff_devtools.devidp.settings import default_users

    users = " or ".join(f"{u.username} / {u.demo_password} (role {u.role})" for u in default_users())
    store = options.store.split("://")[0] + "://" if options.redis_url else "memory:// (set REDIS_URL to use Redis)"
    return "\n".join(
        [
            "bff demo is running:",
            f"  open      {options.public_origin}/          <- the demo SPA, served and protected by bff",
            f"  IdP       {options.issuer}          (admin page: {options.issuer}/admin)",
            f"  demo API  {options.api_url}",
            f"  store     {store}",
            f"Log in as {users}; the passwords are also on the IdP's login page.",
            f"Access tokens live {options.access_token_ttl:.0f} s: watch bff refresh them. Ctrl-C stops everything.",
            "",
        ]
    )


async def run_demo(options: DemoOptions, *, check: bool = False, doctor: bool = False) -> int:
    """Run the three servers until SIGINT/SIGTERM (or, with ``check``, until all three are ready; with ``doctor``
    too, then ``bff doctor`` against them). Exit code."""
    sockets = [
        _bind(options.host, options.idp_port, "the IdP (--idp-port)"),
        _bind(options.host, options.api_port, "the demo API (--api-port)"),
    ]
    try:
        sockets.append(_bind(options.host, options.port, "bff (--port)"))
        with tempfile.TemporaryDirectory(prefix="bff-demo-idp-") as data_dir:
            # bff's [server] limits apply to all three: the IdP and the API face the same browsers.
            server = build_bff_config(options).server
            servers = [_server(app, server) for app in build_apps(options, Path(data_dir))]
            return await _serve(options, servers, sockets, check=check, doctor=doctor)
    finally:
        for sock in sockets:
            sock.close()


async def _serve(
    options: DemoOptions, servers: list[_Server], sockets: list[socket.socket], *, check: bool, doctor: bool = False
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    handled = [sig for sig in (signal.SIGINT, signal.SIGTERM) if _add_signal_handler(loop, sig, stop.set)]
    tasks: list[asyncio.Task[None]] = []
    local = options.local_host
    checks = [
        ("the IdP", f"http://{local}:{options.idp_port}/.well-known/openid-configuration"),
        ("the demo API", f"http://{local}:{options.api_port}/healthz"),
        ("bff", f"http://{local}:{options.port}/readyz"),
    ]
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            deadline = time.monotonic() + options.ready_timeout
            # The IdP first, so that bff loads its metadata at startup instead of retrying with back-off.
            for server, sock, (name, url) in zip(servers, sockets, checks, strict=True):
                tasks.append(asyncio.create_task(server.serve(sockets=[sock])))
                if not await _wait_until_ok(client, url, deadline):
                    sys.stderr.write(f"bff demo: {name} is not ready ({url} did not answer 200)\n")
                    return EXIT_FAILED
        if doctor:
            return await _doctor(options)
        if check:
            store = options.store.split("://")[0]
            sys.stdout.write(
                f"bff demo --check: OK (bff {options.public_origin}, IdP {options.issuer}, API {options.api_url}, "
                f"store {store}://)\n"
            )
            return 0
        sys.stdout.write(_banner(options))
        sys.stdout.flush()
        waiting = asyncio.create_task(stop.wait())
        await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        return 0 if stop.is_set() else EXIT_FAILED
    finally:
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        for sig in handled:
            loop.remove_signal_handler(sig)


async def _doctor(options: DemoOptions) -> int:
    """``bff doctor`` against the running demo: its own configuration, and its origin as ``--url``."""
    from bff.doctor import is_ok, render_table, run_doctor

    checks = await run_doctor(build_bff_config(options), url=options.public_origin)
    sys.stdout.write(render_table(checks))
    return 0 if is_ok(checks) else EXIT_FAILED


def _add_signal_handler(loop: asyncio.AbstractEventLoop, sig: signal.Signals, callback: Callable[[], object]) -> bool:
    try:
        loop.add_signal_handler(sig, callback)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals (Windows)
        return False
    return True
