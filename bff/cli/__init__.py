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

Each product command is a module of this package with a ``register`` function of the same shape as an entry
point's (``serve``, ``check``, ``doctor``, ``sessions``; ``common`` holds what they share).

Exit codes: 0 success, 1 the session store could not be reached (``bff doctor``: a check failed), 2 invalid
configuration or usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from bff import __version__
from bff.cli import check, doctor, serve, sessions
from bff.cli.serve import cmd_serve
from bff.errors import EXIT_CONFIG, ConfigError

if TYPE_CHECKING:
    from bff.cli.common import SubParsers

__all__ = ["build_parser", "cmd_serve", "main"]


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """bff's parser; ``argv``, when given, is the command line it is for (see :func:`_add_plugin_commands`)."""
    parser = argparse.ArgumentParser(prog="bff", description="Backend-for-Frontend reverse proxy")
    parser.add_argument("--version", action="version", version=f"bff {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for register in (serve.register, check.register, doctor.register, sessions.register):
        register(sub)
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
