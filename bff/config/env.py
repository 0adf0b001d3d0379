"""Per-key environment overrides: ``BFF_<SECTION>__<KEY>`` and ``BFF_ROUTES__<INDEX>__<KEY>`` (twelve-factor config).

An override is merged into the parsed TOML document before validation, so the value goes through the very
validator a value from the file does; a problem about an overridden key names its variable. The rules:

* A variable is an override when its name starts with ``BFF_`` and holds ``__``. The parts between ``__`` are the
  key path, upper-cased (``BFF_SESSION__STORE`` is ``[session] store``); a route is chosen by its index.
* A variable that names a section alone (``BFF_SESSION``) or spells a key path with single underscores
  (``BFF_SESSION_STORE``) looks like a mistyped override and is an error with the right name suggested, unless the
  file reads it with ``${...}``. Every other ``BFF_*`` variable (``BFF_CONFIG``, ``BFF_SESSION_KEY``, ...) is not
  an override and is left alone.
* A value is text. Keys of strings take it as it is; booleans are ``true``/``false``; numbers, durations and sizes
  are written as in the file (``30``, ``30s``, ``64KiB``); arrays and tables are TOML (``["10.0.0.0/8"]``,
  ``{ "X-Tenant" = "acme" }``). ``${VAR}`` in a value is expanded as in the file.
* ``BFF_ROUTES__<N>__...`` with ``N`` one past the file's last route adds a route (then ``N + 1``, and so on);
  an index beyond that is an error, so a typo cannot create a half-configured route.
* ``BFF_FRONTENDS__<N or NAME>__...`` set keys of a ``[[frontends]]`` entry (``bff.config.env_frontends``).
* A value is never echoed in a problem: it may be a secret.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import tomllib
import typing
from collections.abc import Mapping
from typing import Any

from bff.config import settings as settings_module
from bff.config.settings import (
    FrontendSettings,
    LoggingSettings,
    OIDCSettings,
    RouteSettings,
    ServerSettings,
    SessionSettings,
    TokenSettings,
)

PREFIX = "BFF_"
SEPARATOR = "__"
FRONTENDS_PREFIX = PREFIX + "FRONTENDS" + SEPARATOR
#: Table name -> the dataclass its keys fill (``routes`` is the array of tables).
SECTIONS: dict[str, type[Any]] = {
    "server": ServerSettings,
    "session": SessionSettings,
    "oidc": OIDCSettings,
    "tokens": TokenSettings,
    "routes": RouteSettings,
    "frontend": FrontendSettings,
    "logging": LoggingSettings,
}
#: The file's ``listen = "host:port"`` fills these two fields of ServerSettings.
_LISTEN_FIELDS = ("host", "port")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SUGGEST_CUTOFF = 0.7

Kind = typing.Literal["string", "boolean", "number", "array", "table"]


@dataclasses.dataclass(frozen=True)
class Overrides:
    """What the environment changed: the merged document, and key path -> variable name."""

    document: dict[str, Any]
    variables: dict[str, str]


def keys_of(section: str) -> dict[str, Kind]:
    """The file keys of one section and the kind of value each takes."""
    schema = SECTIONS[section]
    hints = typing.get_type_hints(schema, vars(settings_module))
    keys: dict[str, Kind] = {}
    for f in dataclasses.fields(schema):
        if schema is ServerSettings and f.name in _LISTEN_FIELDS:
            keys["listen"] = "string"
            continue
        keys[f.name] = _kind(hints[f.name])
    return keys


def _kind(hint: Any) -> Kind:
    origin = typing.get_origin(hint)
    if hint is bool:
        return "boolean"
    if hint in (int, float):
        return "number"
    if origin is tuple:
        return "array"
    if origin is Mapping or any(dataclasses.is_dataclass(arg) for arg in typing.get_args(hint)):
        return "table"  # a table of strings, or a nested table like a route's exchange
    return "string"


def variable_name(path: tuple[str, ...]) -> str:
    return PREFIX + SEPARATOR.join(p.upper() for p in path)


def key_path(path: tuple[str, ...]) -> str:
    """``("routes", "0", "upstream")`` -> ``routes[0].upstream``, as problems name keys."""
    if path[0] == "routes" and len(path) == 3:
        return f"routes[{path[1]}].{path[2]}"
    return ".".join(path)


def _all_names() -> dict[str, tuple[str, ...]]:
    """Every override name with route index 0, for suggestions."""
    names: dict[str, tuple[str, ...]] = {}
    for section in SECTIONS:
        for key in keys_of(section):
            path = ("routes", "0", key) if section == "routes" else (section, key)
            names[variable_name(path)] = path
    return names


def _suggest(name: str, index: str | None = None) -> str:
    names = _all_names()
    probe = name.replace(SEPARATOR, "_") if index is None else name.replace(f"{SEPARATOR}{index}{SEPARATOR}", "__0__")
    flat = {n.replace(SEPARATOR, "_"): n for n in names}
    if index is None and probe in flat:
        return f"did you mean {flat[probe]}? "
    near = difflib.get_close_matches(name if index is None else probe, sorted(names), n=1, cutoff=_SUGGEST_CUTOFF)
    if not near:
        return ""
    suggestion = near[0] if index is None else near[0].replace("__0__", f"__{index}__", 1)
    return f"did you mean {suggestion}? "


def _referenced(value: object, out: set[str]) -> None:
    """Collect the ``${VAR}`` names the document reads."""
    if isinstance(value, str):
        out.update(_ENV_REF.findall(value))
    elif isinstance(value, dict):
        for item in value.values():
            _referenced(item, out)
    elif isinstance(value, list):
        for item in value:
            _referenced(item, out)


def typed_value(kind: Kind, text: str) -> tuple[object, str | None]:
    """The value an override's text stands for, or a problem (never quoting the text: it may be a secret)."""
    if kind == "string":
        return text, None
    if kind == "boolean":
        if text in ("true", "false"):
            return text == "true", None
        return text, None  # the validator reports it as a string where a boolean belongs
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        if kind == "number":
            return text, None  # a duration or a size like 30s or 64KiB: the validator parses it
        example = '["a", "b"]' if kind == "array" else '{ "Name" = "value" }'
        return None, f"expected a TOML {'array' if kind == 'array' else 'inline table'} like {example}"
    if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return value, None
    if kind == "array" and isinstance(value, list):
        return value, None
    if kind == "table" and isinstance(value, dict):
        return value, None
    return text, None


def _route_problem(name: str, index: int, routes: int, set_indexes: set[int]) -> str | None:
    missing = [i for i in range(routes, index) if i not in set_indexes]
    if not missing:
        return None
    return (
        f"{name}: routes[{index}] does not exist and routes[{missing[0]}] is not set: the file has {routes} route(s);"
        " a route added by the environment takes the next index"
    )


def _parse_name(name: str) -> tuple[tuple[str, ...] | None, str | None]:
    """An override's key path, or the problem with its name."""
    parts = tuple(p.lower() for p in name[len(PREFIX) :].split(SEPARATOR))
    section = parts[0]
    path: tuple[str, ...]
    if section not in SECTIONS:
        return None, f"{name}: no such section `{section}` ({_suggest(name)}sections: {', '.join(SECTIONS)})"
    if section == "routes":
        if len(parts) != 3 or not parts[1].isdigit():
            return None, f"{name}: a route key is BFF_ROUTES__<INDEX>__<KEY> ({_suggest(name)}index from 0)"
        path = (section, str(int(parts[1])), parts[2])
    elif len(parts) != 2:
        return None, f"{name}: a key is BFF_{section.upper()}__<KEY> ({_suggest(name)}tables and arrays as TOML)"
    else:
        path = parts
    if path[-1] not in keys_of(section):
        index = path[1] if section == "routes" else None
        return None, f"{name}: no such setting {key_path(path)} ({_suggest(name, index)}see docs/configuration.md)"
    return path, None


def _lookalike(name: str, referenced: set[str]) -> str | None:
    """A problem for a variable that looks like a mistyped override (and that the file does not read)."""
    if name in referenced:
        return None
    rest = name[len(PREFIX) :].lower()
    if rest in SECTIONS:
        return f"{name}: names the section [{rest}]; override its keys one by one (BFF_{rest.upper()}__<KEY>)"
    flat = {n.replace(SEPARATOR, "_"): n for n in _all_names()}
    if name in flat:
        return f"{name}: not an override: did you mean {flat[name]}? (two underscores between key path parts)"
    return None


def apply_overrides(document: Mapping[str, Any], env: Mapping[str, str], problems: list[str]) -> Overrides:
    """The document with every override of ``env`` merged in; problems with override names are appended."""
    merged: dict[str, Any] = dict(document)
    referenced: set[str] = set()
    _referenced(document, referenced)
    wanted: list[tuple[str, tuple[str, ...]]] = []
    for name in sorted(env):
        if not name.startswith(PREFIX):
            continue
        if name.startswith(FRONTENDS_PREFIX):
            continue  # bff.config.env_frontends: a frontend is chosen by index or name
        if SEPARATOR not in name:
            lookalike = _lookalike(name, referenced)
            if lookalike:
                problems.append(lookalike)
            continue
        path, problem = _parse_name(name)
        if problem:
            problems.append(problem)
        elif path is not None:
            wanted.append((name, path))
    variables: dict[str, str] = {}
    raw_routes = merged.get("routes", [])
    routes = list(raw_routes) if isinstance(raw_routes, list) else raw_routes
    set_indexes = {int(p[1]) for _, p in wanted if p[0] == "routes"}
    for name, path in wanted:
        section, key = path[0], path[-1]
        value, problem = typed_value(keys_of(section)[key], env[name])
        if problem:
            problems.append(f"{key_path(path)} (from {name}): {problem}")
            continue
        if section == "routes":
            if not isinstance(routes, list):
                continue  # the file's own problem ("expected an array of tables") is reported by the validator
            index = int(path[1])
            if index >= len(routes):
                route_problem = _route_problem(name, index, len(routes), set_indexes)
                if route_problem:
                    problems.append(route_problem)
                    continue
                routes.extend({} for _ in range(len(routes), index + 1))
            if not isinstance(routes[index], dict):
                continue
            routes[index] = {**routes[index], key: value}
        else:
            current = merged.get(section, {})
            if not isinstance(current, dict):
                continue
            merged[section] = {**current, key: value}
        variables[key_path(path)] = name
    if isinstance(routes, list) and (routes or "routes" in merged):
        merged["routes"] = routes
    return Overrides(merged, variables)


def name_variables(problems: list[str], variables: Mapping[str, str], start: int) -> None:
    """Add the variable's name to each problem (from ``start`` on) about a key an override set."""
    if not variables:
        return
    for i in range(start, len(problems)):
        key, sep, rest = problems[i].partition(": ")
        if not sep:
            continue
        for path, name in variables.items():
            if key == path or key.startswith((path + ".", path + "[")):
                problems[i] = f"{key} (from {name}): {rest}"
                break
