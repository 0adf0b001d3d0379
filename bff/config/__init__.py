"""Typed configuration: one TOML file, read once, validated completely.

``load_config(path)`` returns a frozen :class:`Config` or raises :class:`~bff.errors.ConfigError` carrying every
problem found, each prefixed with its key path (``routes[2].upstream: ...``), in the manner of oauth2-proxy's
``pkg/validation``: collect, then fail once. Unknown keys are errors, so a typo is never silently ignored; the
nearest known key is suggested.

``${VAR}`` anywhere in a string value reads the environment; a missing variable is a problem, not an empty string.
``BFF_<SECTION>__<KEY>`` variables override single keys (``bff.config.env`` states the rules), validated like the file.
Secrets are wrapped in :class:`Secret`, whose ``repr`` hides the value.

The package, one job per module:

* ``settings``: the frozen dataclasses, one per section, where every default is stated (and nowhere else);
* ``values``: what they are made of: the enumerations a key may take, the allow-lists and bounds, ``Secret``;
* ``env``: the per-key environment overrides, merged into the document before validation;
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

from bff.config.client_tls import check_bound_routes
from bff.config.env import apply_overrides, name_variables
from bff.config.env_frontends import apply_frontend_overrides
from bff.config.explain import explain
from bff.config.frontends import prepare_document, read_frontends, uses_frontends
from bff.config.logs import read_logging
from bff.config.metrics import read_metrics
from bff.config.oidc import read_oidc
from bff.config.reader import Reader, parse_duration, parse_size
from bff.config.routes import normalize_prefix, read_routes
from bff.config.server import read_server
from bff.config.session import read_session
from bff.config.settings import (
    Config,
    ExchangeSettings,
    FrontendEntrySettings,
    FrontendSettings,
    LoggingSettings,
    MetricsSettings,
    OIDCSettings,
    RouteSettings,
    ServerSettings,
    SessionSettings,
    TokenSettings,
    TracingSettings,
)
from bff.config.tokens import read_frontend, read_tokens
from bff.config.tracing import read_tracing
from bff.config.values import (
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
    LogFormat,
    LogLevel,
    SameSite,
    Secret,
    TokenPolicy,
)
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
    "ExchangeSettings",
    "FrontendEntrySettings",
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
    "explain_config",
    "load_config",
    "normalize_prefix",
    "parse_config",
    "parse_duration",
    "parse_size",
]


def parse_config(data: Mapping[str, Any], *, env: Mapping[str, str] | None = None, source: str = "<memory>") -> Config:
    """Validate an already-parsed TOML document; raise ConfigError listing every problem."""
    config, _ = parse_config_with_overrides(data, env=env, source=source)
    return config


def parse_config_with_overrides(
    data: Mapping[str, Any], *, env: Mapping[str, str] | None = None, source: str = "<memory>"
) -> tuple[Config, dict[str, str]]:
    """:func:`parse_config`, also returning which keys the environment set (key path -> variable name)."""
    problems: list[str] = []
    environ = os.environ if env is None else env
    overrides = apply_frontend_overrides(apply_overrides(data, environ, problems), environ, problems)
    start = len(problems)
    multi = uses_frontends(overrides.document)
    document = prepare_document(overrides.document, problems) if multi else overrides.document
    root = Reader(document, "", problems, environ, Config)
    server = read_server(root)
    session = read_session(root)
    frontends: tuple[FrontendEntrySettings, ...] = ()
    routes: tuple[RouteSettings, ...] = ()
    if multi:
        frontends = read_frontends(root, _check_route_tokens)
        if not frontends:  # every entry was broken: what follows needs an [oidc]
            name_variables(problems, overrides.variables, start)
            raise ConfigError(problems)
        oidc = frontends[0].oidc
    else:
        oidc = read_oidc(root, server.public_origin)
        routes = read_routes(root)
        _check_route_tokens(root, oidc, routes)
        check_bound_routes(root, oidc.client_cert, routes)
    frontend = None if multi else read_frontend(root)
    tokens = read_tokens(root, oidc.timeout)
    logging = read_logging(root)
    metrics = read_metrics(root, server)
    tracing = read_tracing(root)
    root.finish()
    name_variables(problems, overrides.variables, start)
    if problems:
        raise ConfigError(problems)
    config = Config(
        server=server,
        session=session,
        oidc=oidc,
        routes=routes,
        frontend=frontend,
        tokens=tokens,
        logging=logging,
        metrics=metrics,
        tracing=tracing,
        frontends=frontends,
        source=source,
    )
    return config, overrides.variables


def _check_route_tokens(r: Reader, oidc: OIDCSettings, routes: tuple[RouteSettings, ...]) -> None:
    for index, route in enumerate(routes):
        if route.dpop and not oidc.dpop:  # a token not bound to bff's key would be refused as a DPoP token
            r.problem(f"routes[{index}].dpop", "needs [oidc] dpop = true (tokens are bound at the token endpoint)")
        dpop = oidc.dpop if route.dpop is None else route.dpop
        if route.websocket and dpop and route.token != "none":
            # The upstream handshake carries a plain bearer token: a DPoP-checking upstream would refuse it.
            r.problem(
                f"routes[{index}].websocket",
                "not supported on a DPoP route yet (the upstream handshake carries no DPoP proof); set dpop = false "
                "on this route",
            )


def _read(path: str | os.PathLike[str]) -> tuple[str, dict[str, Any]]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read the file ({exc.strerror or exc})"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{p}: not UTF-8 text"]) from exc
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{p}: not valid TOML ({exc})"]) from exc


def load_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate one TOML file, with the environment's ``BFF_<SECTION>__<KEY>`` overrides."""
    _, data = _read(path)
    return parse_config(data, env=env, source=str(Path(path)))


def explain_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> list[str]:
    """Every effective setting of the file with the environment's overrides, where each came from, secrets masked."""
    text, data = _read(path)
    config, variables = parse_config_with_overrides(data, env=env, source=str(Path(path)))
    return explain(config, variables, data, text)
