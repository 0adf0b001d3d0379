"""``bff doctor``: the conformance self-check before going live (docs/doctor.md); the checks are ``bff.doctor``'s."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import TYPE_CHECKING

from bff.cli.common import EXIT_UNAVAILABLE, load

if TYPE_CHECKING:
    from bff.cli.common import SubParsers


def cmd_doctor(args: argparse.Namespace) -> int:
    from bff.doctor import is_ok, render_json, render_table, run_doctor

    config = load(args)
    checks = asyncio.run(run_doctor(config, url=args.url, call_timeout=args.timeout, frontend=args.frontend))
    if args.json:
        sys.stdout.write(render_json(checks, strict=args.strict))
    else:
        sys.stdout.write(render_table(checks, colour=sys.stdout.isatty() and "NO_COLOR" not in os.environ))
    return 0 if is_ok(checks, strict=args.strict) else EXIT_UNAVAILABLE


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds <= 300:
        raise argparse.ArgumentTypeError(f"expected seconds between 0 and 300, got {value!r}")
    return seconds


def register(sub: SubParsers) -> None:
    doctor = sub.add_parser("doctor", help="check the IdP, client, Redis, upstreams and deployment before going live")
    doctor.add_argument("--config", help="TOML config file (default: $BFF_CONFIG)")
    doctor.add_argument("--url", help="the running deployment's origin, e.g. https://app.example.com")
    doctor.add_argument("--frontend", help="with [[frontends]]: check only this frontend (default: every one)")
    doctor.add_argument("--json", action="store_true", help="machine-readable output (schema: docs/doctor.md)")
    doctor.add_argument("--strict", action="store_true", help="exit 1 on a WARN too")
    doctor.add_argument("--timeout", type=_seconds, default=5.0, help="seconds per network call (default 5)")
    doctor.set_defaults(func=cmd_doctor)
