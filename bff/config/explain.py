"""``bff check --explain``: every effective setting, where it came from, secrets masked.

A setting comes from an environment override (its variable), the file (with the line of its key, found by a line
scan of the TOML text: a key written as a dotted key or inside an inline table is shown without a line), or the
default. Secrets (session keys, the client secret, passwords in URLs, header values a route sets, query values)
are masked: the output is meant to be pasted into a ticket.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bff.config.settings import Config
from bff.config.values import Secret

MASK = "********"
_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.-]+)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")
#: Sections in the order of config/production.toml.
_ORDER = ("server", "session", "oidc", "tokens", "routes", "frontend", "logging")
#: Sections a ``[[frontends]]`` entry holds instead of the top level.
_PER_FRONTEND = ("oidc", "routes", "frontend")


def key_lines(text: str) -> dict[str, int]:
    """Key path (``server.listen``, ``routes[1].upstream``) -> the 1-based line it is set on."""
    lines: dict[str, int] = {}
    table = ""
    routes = frontends = frontend_routes = -1
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            name = header.group(2)
            if header.group(1) == "[[" and name == "routes":
                routes += 1
                table = f"routes[{routes}]"
            elif name.startswith("routes.") and routes >= 0:
                table = f"routes[{routes}]{name[len('routes') :]}"
            elif header.group(1) == "[[" and name == "frontends":
                frontends, frontend_routes = frontends + 1, -1
                table = f"frontends[{frontends}]"
            elif header.group(1) == "[[" and name == "frontends.routes" and frontends >= 0:
                frontend_routes += 1
                table = f"frontends[{frontends}].routes[{frontend_routes}]"
            elif name.startswith("frontends.routes.") and frontend_routes >= 0:
                table = f"frontends[{frontends}].routes[{frontend_routes}]{name[len('frontends.routes') :]}"
            elif name.startswith("frontends.") and frontends >= 0:
                table = f"frontends[{frontends}]{name[len('frontends') :]}"
            else:
                table = name
            lines.setdefault(table, number)  # a sub-table such as [oidc.extra_auth_params] is set by its header
            continue
        key = _KEY.match(line)
        if key and table:
            lines.setdefault(f"{table}.{key.group(1)}", number)
    return lines


def mask_url(url: str) -> str:
    """A URL with its password and query values masked (a Redis URL may carry ``:password@`` or ``?password=``)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return MASK
    netloc = parts.netloc
    if password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:{MASK}@{host}"
    query = "&".join(f"{k.partition('=')[0]}={MASK}" if "=" in k else k for k in parts.query.split("&") if k)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"


def _shown(name: str, value: Any) -> str:
    if name == "proxy" and value is None:
        return "(from HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY)"  # decided per route when bff starts
    if isinstance(value, Secret):
        return MASK
    if isinstance(value, tuple) and value and isinstance(value[0], Secret):
        return "[" + ", ".join(MASK for _ in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return json.dumps(_duration(value))
    if isinstance(value, tuple):
        return json.dumps([str(v) for v in value])
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # A nested table (a route's exchange): its keys that are set, as an inline table.
        value = {
            f.name: getattr(value, f.name) for f in dataclasses.fields(value) if getattr(value, f.name) is not None
        }
    if isinstance(value, Mapping):
        # A route's header values may be API keys; the IdP parameters are shown (they are in every login URL).
        shown = {k: (MASK if name == "set_headers" else v) for k, v in value.items()}
        pairs = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in shown.items())
        return "{ " + pairs + " }" if pairs else "{}"
    if isinstance(value, str) and "://" in value:
        return json.dumps(mask_url(value))
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return json.dumps(str(value))
    if value is None:
        return '""'
    return json.dumps(value)


def _settings(config: Config) -> list[tuple[str, str]]:
    """(key path as in the file, shown value) for every effective setting."""
    out: list[tuple[str, str]] = []
    for section in _ORDER:
        if config.frontends and section in _PER_FRONTEND:  # shown per frontend below
            continue
        value = getattr(config, section)
        tables: list[tuple[str, Any]]
        if section == "routes":
            tables = [(f"routes[{i}]", route) for i, route in enumerate(value)]
        elif value is None:
            continue
        else:
            tables = [(section, value)]
        for prefix, settings in tables:
            for f in dataclasses.fields(settings):
                if section == "server" and f.name in ("host", "port"):
                    if f.name == "host":
                        host = settings.host if ":" not in settings.host else f"[{settings.host}]"
                        out.append((f"{prefix}.listen", json.dumps(f"{host}:{settings.port}")))
                    continue
                out.append((f"{prefix}.{f.name}", _shown(f.name, getattr(settings, f.name))))
    for index, entry in enumerate(config.frontends):
        prefix = f"frontends[{index}]"
        for f in dataclasses.fields(entry):
            if f.name not in _PER_FRONTEND:
                out.append((f"{prefix}.{f.name}", _shown(f.name, getattr(entry, f.name))))
        sections: list[tuple[str, Any]] = [(f"{prefix}.oidc", entry.oidc)]
        sections += [(f"{prefix}.routes[{i}]", route) for i, route in enumerate(entry.routes)]
        sections += [(f"{prefix}.frontend", entry.frontend)] if entry.frontend is not None else []
        for table, settings in sections:
            out.extend(
                (f"{table}.{f.name}", _shown(f.name, getattr(settings, f.name))) for f in dataclasses.fields(settings)
            )
    return out


def explain(config: Config, variables: Mapping[str, str], document: Mapping[str, Any], text: str | None) -> list[str]:
    """One line per effective setting: ``key = value  # origin``."""
    lines = key_lines(text) if text is not None else {}
    rows: list[tuple[str, str]] = []
    for key, shown in _settings(config):
        if key in variables:
            origin = f"env {variables[key]}"
        elif key in lines:
            origin = f"file {config.source}:{lines[key]}"
        elif _in_document(document, key):
            origin = f"file {config.source}"
        else:
            origin = "default"
        rows.append((f"{key} = {shown}", origin))
    width = max((len(r[0]) for r in rows), default=0)
    return [f"{left.ljust(width)}  # {origin}" for left, origin in rows]


def _in_document(document: Mapping[str, Any], key: str) -> bool:
    table, _, name = key.rpartition(".")
    if table.startswith("frontends["):
        entries = document.get("frontends")
        index_text, _, rest = table[len("frontends[") :].partition("]")
        index = int(index_text)
        if not isinstance(entries, list) or index >= len(entries) or not isinstance(entries[index], dict):
            return False
        return _in_document(entries[index], rest.lstrip(".") + "." + name) if rest else name in entries[index]
    if table.startswith("routes["):
        routes = document.get("routes")
        index = int(table[len("routes[") : -1])
        return (
            isinstance(routes, list)
            and index < len(routes)
            and isinstance(routes[index], dict)
            and name in routes[index]
        )
    section = document.get(table)
    return isinstance(section, dict) and name in section
