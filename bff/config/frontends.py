"""``[[frontends]]``: several SPAs, each with its own origin, cookie, IdP client and routes, in one deployment.

Without ``[[frontends]]`` nothing here applies: ``[server] public_origin``, ``[session] cookie_name``, ``[oidc]``,
``[[routes]]`` and ``[frontend]`` describe the one frontend, as ever. With it, those per-frontend keys live in each
entry and are refused at the top level (two places for one setting is how a deployment ends up using the wrong
one); the shared sections (``[session]`` store, keys and timeouts, ``[server]`` listener and limits, ``[tokens]``,
``[logging]``, ``[metrics]``, ``[tracing]``) stay top-level. docs/frontends.md describes the whole feature.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from bff.config.client_tls import check_bound_routes
from bff.config.oidc import read_oidc
from bff.config.reader import HEADER_NAME, Reader, tables
from bff.config.routes import is_plain_path, normalize_prefix, read_routes
from bff.config.server import _public_origin
from bff.config.settings import Config, FrontendEntrySettings, OIDCSettings, RouteSettings
from bff.config.tokens import read_frontend
from bff.config.values import RESERVED_PREFIXES

NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")
#: Top-level keys that belong to each frontend once ``[[frontends]]`` is used: (section, key or None for all).
PER_FRONTEND: tuple[tuple[str, str | None], ...] = (
    ("oidc", None),
    ("routes", None),
    ("frontend", None),
    ("server", "public_origin"),
    ("session", "cookie_name"),
)

#: Checks of a frontend's routes against its ``[oidc]`` that ``bff.config`` runs for the single frontend too.
RouteCheck = Callable[[Reader, OIDCSettings, tuple[RouteSettings, ...]], None]


def uses_frontends(document: Mapping[str, Any]) -> bool:
    return "frontends" in document


def prepare_document(document: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    """The document the shared sections are read from: per-frontend keys at the top level are problems, and
    ``[server] public_origin`` (required by its validator) is taken from the first frontend."""
    out = dict(document)
    for section, key in PER_FRONTEND:
        value = document.get(section)
        if key is None and section in document:
            where = f"frontends[].{section}"
            problems.append(f"{section}: not allowed with [[frontends]]; set it per frontend ({where})")
            out.pop(section)
        elif key is not None and isinstance(value, Mapping) and key in value:
            problems.append(f"{section}.{key}: not allowed with [[frontends]]; set it per frontend (frontends[].{key})")
            out[section] = {k: v for k, v in value.items() if k != key}
    entries = document.get("frontends")
    first = entries[0] if isinstance(entries, list) and entries and isinstance(entries[0], Mapping) else {}
    origin = first.get("public_origin")
    server = out.get("server", {})
    if isinstance(server, Mapping):
        out["server"] = {
            **server,
            "public_origin": origin if isinstance(origin, str) and origin else "http://localhost",
        }
    return out


def _name(r: Reader, names: dict[str, int], index: int) -> str:
    name = r.get("name", str, "", required=True)
    if name and not NAME.match(name):
        r.problem("name", "must be 1-32 of [a-z0-9-], not starting or ending with '-'")
    elif name in names:
        r.problem("name", f"duplicates frontends[{names[name]}].name")
    elif name:
        names[name] = index
    return name


def _cookie_name(r: Reader) -> str:
    name = r.get("cookie_name", str, "", required=True)
    if name and (not name.startswith("__Host-") or not HEADER_NAME.match(name)):
        r.problem(
            "cookie_name",
            "must start with __Host- (binds the cookie to this origin: Secure, Path=/, no Domain) and be a valid "
            "cookie name",
        )
    return name


def _host(r: Reader, public_origin: str) -> str:
    host = r.get("host", str).lower()
    if not host or not public_origin:
        return host
    netloc = urlsplit(public_origin).netloc.lower()
    if host != netloc:
        r.problem("host", "must be public_origin's host (the Host header browsers send to it)")
    return host


def _path_prefix(r: Reader) -> str:
    raw = r.get("path_prefix", str)
    if not raw:
        return raw
    if not is_plain_path(raw):
        r.problem("path_prefix", "must be a plain absolute path like /shop")
        return raw
    prefix = normalize_prefix(raw)
    if prefix == "/":
        r.problem("path_prefix", "must not be '/': leave it out to select every path")
    elif any(prefix == p or prefix.startswith(p + "/") for p in RESERVED_PREFIXES):
        r.problem("path_prefix", f"overlaps bff's own endpoints ({', '.join(RESERVED_PREFIXES)})")
    return prefix


def _default_redirects(oidc: OIDCSettings, public_origin: str, prefix: str, given: Mapping[str, Any]) -> OIDCSettings:
    """Under a path prefix, bff's callback and the page after logout are under it too."""
    if not prefix or not public_origin:
        return oidc
    base = public_origin + prefix
    return dataclasses.replace(
        oidc,
        redirect_uri=oidc.redirect_uri if given.get("redirect_uri") else base + "/bff/callback",
        post_logout_redirect_uri=oidc.post_logout_redirect_uri if given.get("post_logout_redirect_uri") else base + "/",
    )


def _entry(r: Reader, index: int, names: dict[str, int], check_routes: RouteCheck) -> FrontendEntrySettings:
    name = _name(r, names, index)
    public_origin = _public_origin(r)
    cookie_name = _cookie_name(r)
    host = _host(r, public_origin)
    prefix = _path_prefix(r)
    for key, value in (("name", name), ("public_origin", public_origin), ("cookie_name", cookie_name)):
        if not value and key in r.data:
            r.problem(key, "must not be empty")
    if not host and not prefix:
        r.problem("host", "set host or path_prefix (or both): how requests find this frontend")
    oidc_data = r.data.get("oidc")
    oidc = read_oidc(r, public_origin)
    oidc = _default_redirects(oidc, public_origin, prefix, oidc_data if isinstance(oidc_data, Mapping) else {})
    routes = read_routes(r)
    check_routes(r, oidc, routes)
    check_bound_routes(r, oidc.client_cert, routes)
    frontend = read_frontend(r)
    r.finish()
    return FrontendEntrySettings(
        name=name,
        public_origin=public_origin,
        cookie_name=cookie_name,
        oidc=oidc,
        host=host,
        path_prefix=prefix,
        routes=routes,
        frontend=frontend,
    )


def _check_unique(entries: list[FrontendEntrySettings], problems: list[str]) -> None:
    cookies: dict[str, int] = {}
    selectors: dict[tuple[str, str], int] = {}
    for index, entry in enumerate(entries):
        if entry.cookie_name in cookies:
            problems.append(
                f"frontends[{index}].cookie_name: duplicates frontends[{cookies[entry.cookie_name]}].cookie_name "
                "(each frontend's cookie must be its own)"
            )
        else:
            cookies[entry.cookie_name] = index
        selector = (entry.host, entry.path_prefix)
        if (entry.host or entry.path_prefix) and selector in selectors:
            problems.append(
                f"frontends[{index}]: selects the same requests (host, path_prefix) as frontends[{selectors[selector]}]"
            )
        else:
            selectors[selector] = index


def read_frontends(root: Reader, check_routes: RouteCheck) -> tuple[FrontendEntrySettings, ...]:
    names: dict[str, int] = {}
    rows = tables(root, "frontends", FrontendEntrySettings, required=True)
    entries = [_entry(r, index, names, check_routes) for index, r in rows]
    _check_unique(entries, root.problems)
    return tuple(entries)


def store_namespace(name: str) -> str:
    """The prefix of every store key of frontend ``name`` (``:`` cannot occur in a name, so no two overlap, and a
    single frontend's keys, which start with a one-letter kind, never take this form)."""
    return f"fe:{name}:"


def frontend_config(config: Config, entry: FrontendEntrySettings) -> Config:
    """The single-frontend :class:`Config` one frontend's app stack runs with."""
    return dataclasses.replace(
        config,
        server=dataclasses.replace(config.server, public_origin=entry.public_origin),
        session=dataclasses.replace(config.session, cookie_name=entry.cookie_name),
        oidc=entry.oidc,
        routes=entry.routes,
        frontend=entry.frontend,
        frontends=(),
    )


def oidc_key(frontend_name: str) -> str:
    """Where a frontend's ``[oidc]`` settings sit in the config, for messages: ``oidc`` without ``[[frontends]]``."""
    return f"frontends[{frontend_name!r}].oidc" if frontend_name else "oidc"


def find_frontend(config: Config, name: str) -> FrontendEntrySettings | None:
    return next((entry for entry in config.frontends if entry.name == name), None)
