"""The result of one doctor check, and how a list of them is shown: a table for people, JSON for CI.

JSON schema (``bff doctor --json``; version 1, stable: fields are only ever added)::

    {"version": 1,
     "ok": true,                      # no FAIL (and, with --strict, no WARN)
     "summary": {"PASS": 21, "WARN": 0, "FAIL": 0, "SKIP": 1},
     "checks": [{"id": "idp.discovery.issuer", "group": "idp", "status": "PASS",
                 "message": "...", "fix": "", "frontend": "shop"}, ...]}

``frontend`` names the ``[[frontends]]`` entry a check is about; it is null for a check of something the frontends
share (the session store) and for a configuration without ``[[frontends]]``.

Every text that leaves here goes through :func:`mask` with the configuration's secrets, so a message that quotes an
answer can never print the client secret, a session key or a Redis password.
"""

from __future__ import annotations

import dataclasses
import json
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Status = Literal["PASS", "WARN", "FAIL", "SKIP"]
STATUSES: tuple[Status, ...] = ("PASS", "WARN", "FAIL", "SKIP")
SCHEMA_VERSION = 1
MASK = "***"

_COLOURS: dict[Status, str] = {"PASS": "\033[32m", "WARN": "\033[33m", "FAIL": "\033[31m", "SKIP": "\033[2m"}
_RESET = "\033[0m"


@dataclass(frozen=True)
class Check:
    """One finding. ``id`` is stable (CI may match on it), ``fix`` says what to change (empty on PASS/SKIP),
    ``frontend`` the ``[[frontends]]`` entry it is about (None: shared, or no ``[[frontends]]``)."""

    id: str
    status: Status
    message: str
    fix: str = ""
    frontend: str | None = None

    @property
    def group(self) -> str:
        return self.id.split(".", 1)[0].split("[", 1)[0]

    def to_json(self) -> dict[str, str | None]:
        return {
            "id": self.id,
            "group": self.group,
            "status": self.status,
            "message": self.message,
            "fix": self.fix,
            "frontend": self.frontend,
        }


def passed(check_id: str, message: str) -> Check:
    return Check(check_id, "PASS", message)


def warned(check_id: str, message: str, fix: str) -> Check:
    return Check(check_id, "WARN", message, fix)


def failed(check_id: str, message: str, fix: str) -> Check:
    return Check(check_id, "FAIL", message, fix)


def skipped(check_id: str, reason: str) -> Check:
    return Check(check_id, "SKIP", reason)


def mask(checks: Iterable[Check], secrets: Iterable[str]) -> list[Check]:
    """``checks`` with every occurrence of a secret replaced by ``***`` (longest first, so no part survives), and
    control characters (which an answer quoted in a message may carry to the operator's terminal) as ``?``."""
    values = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def clean(text: str) -> str:
        for value in values:
            text = text.replace(value, MASK)
        return "".join("?" if unicodedata.category(ch) == "Cc" else ch for ch in text)

    return [dataclasses.replace(c, message=clean(c.message), fix=clean(c.fix)) for c in checks]


def of_frontend(checks: Iterable[Check], name: str | None) -> list[Check]:
    """``checks`` as findings about frontend ``name``."""
    return [dataclasses.replace(c, frontend=name) for c in checks]


def is_ok(checks: Sequence[Check], *, strict: bool = False) -> bool:
    """No FAIL; with ``strict``, no WARN either."""
    bad = {"FAIL", "WARN"} if strict else {"FAIL"}
    return not any(c.status in bad for c in checks)


def summary(checks: Sequence[Check]) -> dict[str, int]:
    return {status: sum(1 for c in checks if c.status == status) for status in STATUSES}


def render_json(checks: Sequence[Check], *, strict: bool = False) -> str:
    document = {
        "version": SCHEMA_VERSION,
        "ok": is_ok(checks, strict=strict),
        "summary": summary(checks),
        "checks": [c.to_json() for c in checks],
    }
    return json.dumps(document, indent=2) + "\n"


def render_table(checks: Sequence[Check], *, colour: bool = False) -> str:
    """One line per check (status, frontend when there are several, id, message), the fix indented below it, and a
    summary line. A check of what the frontends share shows ``*`` as its frontend."""
    names = {c.frontend for c in checks}
    named = names != {None}
    front = max((len(n or "*") for n in names), default=0) + 2 if named else 0
    width = max((len(c.id) for c in checks), default=0)
    lines = []
    for check in checks:
        status = f"{_COLOURS[check.status]}{check.status}{_RESET}" if colour else check.status
        frontend = f"{check.frontend or '*':<{front - 2}}  " if named else ""
        lines.append(f"{status}  {frontend}{check.id:<{width}}  {check.message}")
        if check.fix:
            lines.append(f"      {'':<{front + width}}  fix: {check.fix}")
    counts = summary(checks)
    lines.append(", ".join(f"{counts[s]} {s}" for s in STATUSES))
    return "\n".join(lines) + "\n"
