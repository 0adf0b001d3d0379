"""Config documents for tests: a valid base that each test modifies, and the TOML file of a ``bff serve`` process."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from bff.config import Config, parse_config

SESSION_KEY = "k" * 16 + "0123456789abcdef-test-session-key"
CLIENT_SECRET = "test-client-secret-0123456789-abcdefghij"


def base_document(
    *, public_origin: str = "https://app.example.com", issuer: str = "https://idp.example.com", store: str = "memory://"
) -> dict[str, Any]:
    return {
        "server": {"listen": "127.0.0.1:8000", "public_origin": public_origin},
        "session": {"store": store, "keys": [SESSION_KEY]},
        "oidc": {"issuer": issuer, "client_id": "spa-bff", "client_secret": CLIENT_SECRET},
        "routes": [{"path": "/api/orders", "upstream": "https://orders.example.net/v1", "token": "user"}],
    }


def make_config(doc: dict[str, Any] | None = None, **kwargs: Any) -> Config:
    return parse_config(copy.deepcopy(doc) if doc is not None else base_document(**kwargs), env={})


def write_config(
    path: Path,
    *,
    port: int,
    redis_url: str,
    idp_url: str,
    client_secret: str,
    upstream: str,
    refresh_lock_lease: str | None = None,
    oidc_timeout: str | None = None,
    session_extra: str = "",
    drain_delay: str | None = "0s",
    shutdown_timeout: str | None = "2s",
) -> None:
    """Write the TOML config of a ``bff serve`` process on ``127.0.0.1:port``: sessions in ``redis_url`` under
    :data:`SESSION_KEY`, client ``spa-bff`` at ``idp_url``, one route ``/api`` to ``upstream`` with the user's token.
    ``session_extra``: more lines of ``[session]``. The process stops at once on SIGTERM (no load balancer to
    drain), unless ``drain_delay`` says otherwise; None leaves a key out (a release that does not know it)."""
    tokens = "" if refresh_lock_lease is None else f'\n[tokens]\nrefresh_lock_lease = "{refresh_lock_lease}"\n'
    timeout = "" if oidc_timeout is None else f'timeout = "{oidc_timeout}"'
    drain = "" if drain_delay is None else f'drain_delay = "{drain_delay}"'
    shutdown = "" if shutdown_timeout is None else f'shutdown_timeout = "{shutdown_timeout}"'
    path.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
public_origin = "http://127.0.0.1:{port}"
{drain}
{shutdown}

[session]
store = "{redis_url}"
keys = ["{SESSION_KEY}"]
{session_extra}
[oidc]
issuer = "{idp_url}"
client_id = "spa-bff"
client_secret = "{client_secret}"
{timeout}
{tokens}
[[routes]]
path = "/api"
upstream = "{upstream}"
token = "user"
""")
