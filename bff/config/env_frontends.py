"""Environment overrides of ``[[frontends]]`` entries: ``BFF_FRONTENDS__<FRONTEND>__...`` (twelve-factor config).

The forms, each merged into the document before validation like ``bff.config.env``'s overrides:

* ``BFF_FRONTENDS__<FRONTEND>__<KEY>``: a key of the entry (``NAME``, ``PUBLIC_ORIGIN``, ``COOKIE_NAME``, ``HOST``,
  ``PATH_PREFIX``);
* ``BFF_FRONTENDS__<FRONTEND>__OIDC__<KEY>`` and ``..._FRONTEND__<KEY>``: a key of its ``[frontends.oidc]`` or
  ``[frontends.frontend]`` (``BFF_FRONTENDS__ADMIN__OIDC__CLIENT_SECRET``);
* ``BFF_FRONTENDS__<FRONTEND>__ROUTES__<M>__<KEY>``: a key of its route ``M``; ``M`` one past its last route adds
  one (as ``BFF_ROUTES__<N>__<KEY>`` does).

``<FRONTEND>`` is the entry's index in the file (``0``) or its ``name`` upper-cased with ``-`` written ``_``
(``ADMIN``, ``BACK_OFFICE`` for ``back-office``): a name survives reordering the file. Digits alone are an index
(a frontend named ``1`` is reached by its index). The environment never adds a frontend: an unknown index or name
is an error, as is one key set twice (by index and by name), and a top-level override of a per-frontend key
(``BFF_OIDC__CLIENT_SECRET`` next to ``[[frontends]]``) is an error that names the form to use. Values are typed
as in ``bff.config.env``, never echoed in a problem.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from bff.config.env import FRONTENDS_PREFIX, SEPARATOR, Kind, Overrides, keys_of, typed_value
from bff.config.settings import FrontendEntrySettings

#: Sub-tables of an entry and the section whose keys they take.
_TABLES = ("oidc", "frontend")
#: The entry's own keys (every one a string); its sub-tables and routes are reached by the other forms.
ENTRY_KEYS = tuple(f.name for f in dataclasses.fields(FrontendEntrySettings) if f.name not in (*_TABLES, "routes"))
_FORMS = (
    "BFF_FRONTENDS__<INDEX or NAME>__<KEY>, BFF_FRONTENDS__<INDEX or NAME>__OIDC__<KEY>, "
    "BFF_FRONTENDS__<INDEX or NAME>__FRONTEND__<KEY> or BFF_FRONTENDS__<INDEX or NAME>__ROUTES__<M>__<KEY>"
)


@dataclasses.dataclass(frozen=True)
class _Wanted:
    name: str
    index: int
    #: ``("cookie_name",)``, ``("oidc", "client_secret")`` or ``("routes", "2", "upstream")``.
    path: tuple[str, ...]
    kind: Kind

    @property
    def key_path(self) -> str:
        head = f"frontends[{self.index}]"
        if self.path[0] == "routes":
            return f"{head}.routes[{self.path[1]}].{self.path[2]}"
        return head + "." + ".".join(self.path)


def _entries(document: Mapping[str, Any]) -> list[Any]:
    entries = document.get("frontends")
    return entries if isinstance(entries, list) else []


def _select(name: str, selector: str, entries: list[Any]) -> tuple[int | None, str | None]:
    """The entry's index, or the problem with the selector."""
    if selector.isdigit():
        index = int(selector)
        if index < len(entries):
            return index, None
        return None, (
            f"{name}: frontends[{index}] does not exist: the file has {len(entries)} frontend(s) "
            "(the environment sets keys of existing frontends, it does not add any)"
        )
    wanted = selector.lower().replace("_", "-")
    names = [e.get("name") if isinstance(e, dict) else None for e in entries]
    if wanted in names:
        return names.index(wanted), None
    known = ", ".join(n.upper().replace("-", "_") for n in names if isinstance(n, str)) or "none"
    return None, f"{name}: no frontend named {wanted!r} in the file (names: {known}; or an index from 0)"


def _parse(name: str, entries: list[Any]) -> tuple[_Wanted | None, str | None]:
    parts = [p.lower() for p in name[len(FRONTENDS_PREFIX) :].split(SEPARATOR)]
    if len(parts) < 2 or not all(parts):
        return None, f"{name}: a frontend key is {_FORMS}"
    index, problem = _select(name, parts[0], entries)
    if index is None:
        return None, problem
    rest = tuple(parts[1:])
    known: Mapping[str, Kind]
    if len(rest) == 1:
        known, where = dict.fromkeys(ENTRY_KEYS, "string"), f"frontends[{index}]"
    elif len(rest) == 2 and rest[0] in _TABLES:
        known, where = keys_of(rest[0]), f"frontends[{index}].{rest[0]}"
    elif len(rest) == 3 and rest[0] == "routes" and rest[1].isdigit():
        rest = ("routes", str(int(rest[1])), rest[2])
        known, where = keys_of("routes"), f"frontends[{index}].routes[{rest[1]}]"
    else:
        return None, f"{name}: a frontend key is {_FORMS}"
    if rest[-1] not in known:
        return None, f"{name}: no such setting {where}.{rest[-1]} (see docs/configuration.md#frontends)"
    return _Wanted(name, index, rest, known[rest[-1]]), None


def _route_gap(want: _Wanted, routes: list[Any], set_routes: set[tuple[int, int]]) -> str | None:
    index = int(want.path[1])
    missing = [i for i in range(len(routes), index) if (want.index, i) not in set_routes]
    if not missing:
        return None
    return (
        f"{want.name}: frontends[{want.index}].routes[{index}] does not exist and routes[{missing[0]}] is not set: "
        f"the frontend has {len(routes)} route(s); a route added by the environment takes the next index"
    )


def _merge(entry: dict[str, Any], want: _Wanted, value: object, set_routes: set[tuple[int, int]]) -> str | None:
    """Set one key in a copy-on-write entry; a problem when a route index leaves a gap."""
    key = want.path[-1]
    if len(want.path) == 1:
        entry[key] = value
        return None
    if want.path[0] in _TABLES:
        table = entry.get(want.path[0], {})
        if isinstance(table, dict):  # otherwise the validator reports the file's own problem
            entry[want.path[0]] = {**table, key: value}
        return None
    routes = entry.get("routes", [])
    if not isinstance(routes, list):
        return None
    routes = list(routes)
    index = int(want.path[1])
    if index >= len(routes):
        gap = _route_gap(want, routes, set_routes)
        if gap:
            return gap
        routes.extend({} for _ in range(len(routes), index + 1))
    if isinstance(routes[index], dict):
        routes[index] = {**routes[index], key: value}
    entry["routes"] = routes
    return None


def _misplaced(variables: Mapping[str, str], problems: list[str]) -> None:
    """A top-level override of a per-frontend key (left from a single-frontend deployment, say) names the form that
    reaches a frontend."""
    for path, name in variables.items():
        section, _, key = path.partition(".")
        if section.startswith("routes["):
            index = section[len("routes[") : -1]
            suggestion = f"ROUTES__{index}__{key.upper()}"
        elif section in _TABLES:
            suggestion = f"{section.upper()}__{key.upper()}"
        elif path in ("server.public_origin", "session.cookie_name"):
            suggestion = key.upper()
        else:
            continue
        problems.append(
            f"{name}: sets {path}, which is per frontend with [[frontends]]; use "
            f"{FRONTENDS_PREFIX}<INDEX or NAME>{SEPARATOR}{suggestion}"
        )


def apply_frontend_overrides(overrides: Overrides, env: Mapping[str, str], problems: list[str]) -> Overrides:
    """``bff.config.env``'s overrides with every ``BFF_FRONTENDS__...`` override merged in too; problems with them
    are appended."""
    document = overrides.document
    if "frontends" in document:
        _misplaced(overrides.variables, problems)
    entries = _entries(document)
    wanted: list[_Wanted] = []
    by_key: dict[str, str] = {}
    for name in sorted(env):
        if not name.startswith(FRONTENDS_PREFIX):
            continue
        if not entries:
            problems.append(f"{name}: the file has no [[frontends]]; the environment does not add any")
            continue
        want, problem = _parse(name, entries)
        if want is None:
            problems.append(problem or name)
            continue
        if want.key_path in by_key:
            problems.append(f"{name}: {want.key_path} is also set by {by_key[want.key_path]}; set it once")
            continue
        by_key[want.key_path] = name
        wanted.append(want)
    if not wanted:
        return overrides
    merged_entries = [dict(e) if isinstance(e, dict) else e for e in entries]
    set_routes = {(w.index, int(w.path[1])) for w in wanted if w.path[0] == "routes"}
    variables: dict[str, str] = {}
    for want in wanted:
        value, problem = typed_value(want.kind, env[want.name])
        entry = merged_entries[want.index]
        if not isinstance(entry, dict):
            continue  # the validator reports the file's own problem ("expected a table")
        if problem is None:
            problem = _merge(entry, want, value, set_routes)
        if problem is not None:
            problems.append(
                problem if problem.startswith(want.name) else f"{want.key_path} (from {want.name}): {problem}"
            )
            continue
        variables[want.key_path] = want.name
    return Overrides({**document, "frontends": merged_entries}, {**overrides.variables, **variables})
