"""What bff's commands share: the config they act on (``--config`` or ``$BFF_CONFIG``, ``--listen``,
``--frontend``), the DPoP key check run before anything starts, and the exit code of an unreachable service."""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import TYPE_CHECKING

from bff.config import Config, load_config
from bff.config.frontends import find_frontend, frontend_config
from bff.config.server import parse_listen
from bff.errors import ConfigError

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

#: The session store (``bff doctor``: a check) failed; ``EXIT_CONFIG`` (2) is a bad config or usage.
EXIT_UNAVAILABLE = 1


def config_path(args: argparse.Namespace) -> str:
    path: str | None = args.config or os.environ.get("BFF_CONFIG")
    if not path:
        raise ConfigError(["no configuration: pass --config PATH or set BFF_CONFIG"])
    return path


def load(args: argparse.Namespace) -> Config:
    config = load_config(config_path(args))
    listen: str | None = getattr(args, "listen", None)
    if listen is None:
        return config
    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        raise ConfigError([f"--listen: {exc}"]) from exc
    return dataclasses.replace(config, server=dataclasses.replace(config.server, host=host, port=port))


def check_dpop_key(config: Config) -> None:
    """Raises ConfigError unless ``[oidc] dpop_key_file`` holds a usable key (when DPoP is on)."""
    if config.oidc.dpop and config.oidc.dpop_key_file:
        from bff.oidc.dpop import load_dpop_key

        load_dpop_key(config.oidc.dpop_key_file)


def one_frontend(config: Config, name: str) -> tuple[Config, str]:
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
