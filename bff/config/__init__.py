"""Typed configuration: one TOML file, read once, validated completely.

``load_config(path)`` returns a frozen :class:`Config` or raises :class:`~bff.errors.ConfigError` carrying every
problem found, each prefixed with its key path (``routes[2].upstream: ...``), in the manner of oauth2-proxy's
``pkg/validation``: collect, then fail once. Unknown keys are errors, so a typo is never silently ignored; the
nearest known key is suggested.

``${VAR}`` anywhere in a string value reads the environment; a missing variable is a problem, not an empty string.
Secrets are wrapped in :class:`Secret`, whose ``repr`` hides the value.

The package, one job per module:

* ``settings``: the frozen dataclasses, one per section, where every default is stated (and nowhere else);
* ``reader``: the table walker that records problems with their key paths, and the value parsers;
* ``server``, ``session``, ``oidc``, ``routes``, ``tokens``, ``logs``, ``metrics``, ``tracing``: one validator per
  section, each a few small checks.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bff.config.logs import read_logging
from bff.config.metrics import read_metrics
from bff.config.oidc import read_oidc
from bff.config.reader import Reader, parse_duration, parse_size
from bff.config.routes import normalize_prefix, read_routes
from bff.config.server import read_server
from bff.config.session import read_session
from bff.config.settings import (
    ALLOWED_SIGNING_ALGS,
    AUTH_METHODS,
    HTTP_METHODS,
    LOG_FORMATS,
    LOG_LEVELS,
    MAX_PENDING_LOGINS,
    MIN_KEY_LENGTH,
    RESERVED_PREFIXES,
    SAME_SITES,
    TOKEN_POLICIES,
    AuthMethod,
    Config,
    FrontendSettings,
    LogFormat,
    LoggingSettings,
    LogLevel,
    MetricsSettings,
    OIDCSettings,
    RouteSettings,
    SameSite,
    Secret,
    ServerSettings,
    SessionSettings,
    TokenPolicy,
    TokenSettings,
    TracingSettings,
)
from bff.config.tokens import read_frontend, read_tokens
from bff.config.tracing import read_tracing
from bff.errors import ConfigError

__all__ = [
    "ALLOWED_SIGNING_ALGS",
    "AUTH_METHODS",
    "HTTP_METHODS",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "MAX_PENDING_LOGINS",
    "MIN_KEY_LENGTH",
    "RESERVED_PREFIXES",
    "SAME_SITES",
    "TOKEN_POLICIES",
    "AuthMethod",
    "Config",
    "FrontendSettings",
    "LogFormat",
    "LogLevel",
    "LoggingSettings",
    "MetricsSettings",
    "OIDCSettings",
    "RouteSettings",
    "SameSite",
    "Secret",
    "ServerSettings",
    "SessionSettings",
    "TokenPolicy",
    "TokenSettings",
    "TracingSettings",
    "load_config",
    "normalize_prefix",
    "parse_config",
    "parse_duration",
    "parse_size",
]


def parse_config(data: Mapping[str, Any], *, env: Mapping[str, str] | None = None, source: str = "<memory>") -> Config:
    """Validate an already-parsed TOML document; raise ConfigError listing every problem."""
    problems: list[str] = []
    root = Reader(data, "", problems, os.environ if env is None else env, Config)
    server = read_server(root)
    session = read_session(root)
    oidc = read_oidc(root, server.public_origin)
    routes = read_routes(root)
    frontend = read_frontend(root)
    tokens = read_tokens(root, oidc.timeout)
    logging = read_logging(root)
    metrics = read_metrics(root, server)
    tracing = read_tracing(root)
    root.finish()
    if problems:
        raise ConfigError(problems)
    return Config(
        server=server,
        session=session,
        oidc=oidc,
        routes=routes,
        frontend=frontend,
        tokens=tokens,
        logging=logging,
        metrics=metrics,
        tracing=tracing,
        source=source,
    )


def load_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate one TOML file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read the file ({exc.strerror or exc})"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{p}: not UTF-8 text"]) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{p}: not valid TOML ({exc})"]) from exc
    return parse_config(data, env=env, source=str(p))
