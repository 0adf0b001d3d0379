"""``docs/configuration.md`` is generated from the config dataclasses, and this test keeps it so.

Every key's type, default and meaning come from ``bff/config/settings.py``: the type from the field's annotation
(a float is a duration, an int that takes ``64KiB`` is a size: the validator is asked), the default from the
field, the meaning from the field's ``#:`` comment. A key added without a ``#:`` comment, or a default changed
without regenerating the page, fails here. Regenerate with ``.venv/bin/python -m tests.test_configuration_doc``.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import ipaddress
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from bff.config import (
    Config,
    ExchangeSettings,
    FrontendEntrySettings,
    FrontendSettings,
    LoggingSettings,
    MetricsSettings,
    OIDCSettings,
    RouteSettings,
    Secret,
    ServerSettings,
    SessionSettings,
    TokenSettings,
    TracingSettings,
    parse_config,
)
from bff.config import settings as settings_module
from bff.errors import ConfigError
from tests.support.configs import base_document

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
#: TOML table header -> its dataclass, in the order of config/production.toml.
SECTIONS: tuple[tuple[str, type[Any]], ...] = (
    ("[server]", ServerSettings),
    ("[session]", SessionSettings),
    ("[oidc]", OIDCSettings),
    ("[tokens]", TokenSettings),
    ("[[routes]]", RouteSettings),
    ("[frontend]", FrontendSettings),
    ("[logging]", LoggingSettings),
    ("[metrics]", MetricsSettings),
    ("[tracing]", TracingSettings),
    ("[[frontends]]", FrontendEntrySettings),
)
#: Inline tables of a section: their keys get a table of their own right after the section's.
SUBTABLES: dict[type[Any], tuple[tuple[str, type[Any]], ...]] = {
    RouteSettings: (("[[routes]] exchange = { ... }", ExchangeSettings),),
}
#: The file's ``listen = "host:port"`` fills two fields.
LISTEN_FIELDS = ("host", "port")

HEADER = """# Configuration reference

<!-- Generated from bff/config/settings.py by tests/test_configuration_doc.py: edit the dataclasses' `#:` comments
and regenerate with `.venv/bin/python -m tests.test_configuration_doc`; the test fails while this page differs. -->

bff reads one TOML file (`bff serve --config PATH`, or `$BFF_CONFIG`; `bff check` validates it and prints every
problem with its key path), and `BFF_<SECTION>__<KEY>` variables override single keys (see
[Environment overrides](#environment-overrides)). `config/production.toml` is a commented example of every key;
`config/dev.toml` runs the demo. Rules for every key:

- Unknown keys are errors (with the nearest known key suggested), so a typo is never silently ignored.
- `${VAR}` anywhere in a string reads the environment at startup; a missing variable is an error. Secrets belong
  there, never in the file.
- A *duration* is `250ms`, `30s`, `15m`, `12h`, `1d` or a number of seconds; a *size* is `512B`, `64KiB`, `10MiB`,
  `1GiB` (or `KB`/`MB`/`GB`, powers of 1000) or a number of bytes.
- A key with the default *required* must be set.
- A problem names the key and what it expects, never the value it found: a value may be a secret (from `${VAR}`
  or an override below), so none is repeated, from the file or the environment.
"""


ENVIRONMENT = """
## Environment overrides

Every key can be set from the environment, without templating the file (twelve-factor config). The variable is
`BFF_`, then the key path upper-cased with `__` between its parts; a route is chosen by its index from 0:

| variable | key |
| --- | --- |
| `BFF_SESSION__STORE` | `[session] store` |
| `BFF_SERVER__TRUSTED_PROXIES` | `[server] trusted_proxies` |
| `BFF_ROUTES__0__UPSTREAM` | `upstream` of the first `[[routes]]` |

- **Values** are text, written as in the file without the quotes of a string: strings as they are
  (`BFF_OIDC__CLIENT_ID=12345` is the string `"12345"`), booleans `true`/`false`, durations and sizes as in the
  file (`30s`, `64KiB`, or a number), arrays as TOML arrays (`["10.0.0.0/8", "192.168.0.0/16"]`) and tables as
  TOML inline tables (`{ "X-Tenant" = "acme" }`). `${VAR}` in a value is expanded as in the file.
- **Validation** is the file's: the same validator and message, with the variable named
  (`session.store (from BFF_SESSION__STORE): expected memory://, ...`). A value is never printed in a problem.
- **Which variables are overrides:** every `BFF_*` variable whose name holds `__`; an unknown one
  (`BFF_SESSION__STROE`) is an error with the nearest name suggested. A variable that names a section alone
  (`BFF_SESSION`) or spells a key with single underscores (`BFF_SESSION_STORE`) is an error too, unless the file
  reads it with `${...}`. Other `BFF_*` variables (`BFF_CONFIG`, `BFF_SESSION_KEY`, `BFF_CLIENT_SECRET`, ...) are
  not overrides.
- **Routes:** `BFF_ROUTES__<N>__<KEY>` changes one key of route `N` of the file. `N` one past the file's last
  route adds a route (it needs `PATH` and `UPSTREAM` like any route; then `N + 1`, and so on); an index beyond that
  is an error, so a typo cannot create a half-configured route. A section the file leaves out can come entirely
  from the environment.
- **Frontends** (`[[frontends]]`, docs/frontends.md): `BFF_FRONTENDS__<FRONTEND>__<KEY>` (`NAME`, `PUBLIC_ORIGIN`,
  `COOKIE_NAME`, `HOST`, `PATH_PREFIX`), `BFF_FRONTENDS__<FRONTEND>__OIDC__<KEY>`,
  `BFF_FRONTENDS__<FRONTEND>__FRONTEND__<KEY>` and `BFF_FRONTENDS__<FRONTEND>__ROUTES__<M>__<KEY>` (`M` one past the
  frontend's last route adds one, as above). `<FRONTEND>` is the entry's index from 0 or its `name` upper-cased with
  `-` as `_` (`BFF_FRONTENDS__BACK_OFFICE__OIDC__CLIENT_SECRET` for `name = "back-office"`): a name keeps pointing
  at the same frontend when the file is reordered. Digits alone are an index. The environment never adds a
  frontend: an index or name the file does not have is an error, and so is one key set twice (by index and by
  name). With `[[frontends]]`, a top-level override of a per-frontend key (`BFF_OIDC__CLIENT_SECRET`,
  `BFF_ROUTES__0__UPSTREAM`, `BFF_SERVER__PUBLIC_ORIGIN`) is an error naming the `BFF_FRONTENDS__` form.
  Problems and `bff check --explain` name the key by index (`frontends[1].oidc.client_secret`).
- **Where a value came from:** `bff check --explain` prints every effective setting with its origin (the file and
  line, the variable, or the default), secrets masked (session keys, the client secret, passwords and query values
  in URLs, the values of a route's `set_headers`).

## Forward proxies for upstreams

Upstream calls go through the proxy the environment names, with the rules httpx applies to the IdP calls:
`HTTPS_PROXY` for https upstreams, `HTTP_PROXY` for http ones, `ALL_PROXY` for both, and `NO_PROXY` (`*`: never;
`example.com`: it and its subdomains; `.example.com`: subdomains only; IP literals and `localhost` exactly;
`host:port`: that port only; no CIDR ranges). A route's `proxy` key overrides the environment for that route
(`proxy = ""`: always direct). The choice is made once per route when bff starts. Only `http://` proxies are
supported; credentials in the proxy URL are sent as `Proxy-Authorization` to the proxy only. An https upstream is
reached through a `CONNECT` tunnel with TLS to the upstream itself (its name for SNI and verification, the route's
`ca_bundle`); a proxy that refuses the tunnel (407, 403, 502, ...) gives the browser a 502
`upstream_proxy_refused`, a proxy that cannot be reached or answers garbage a 502 `upstream_proxy_error`.
An http upstream (loopback only) through a proxy is sent to the proxy in the clear, the user's token included, as
with any HTTP client: list loopback upstreams in `NO_PROXY` (`NO_PROXY=localhost,127.0.0.1`) or set `proxy = ""`.
"""


def _meanings(cls: type[Any]) -> dict[str, str]:
    """Field name -> the ``#:`` comment lines right above it, joined."""
    out: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        name, colon, _ = stripped.partition(":")
        field_line = colon and name.isidentifier() and line.startswith("    ") and not line.startswith("     ")
        if field_line and pending:
            out[name] = " ".join(pending).replace("``", "`")
        pending = []
    return out


def _table(doc: dict[str, Any], cls: type[Any]) -> dict[str, Any]:
    """The table of the valid base document that ``cls`` is read from."""
    if cls is RouteSettings:
        table: dict[str, Any] = doc["routes"][0]
        return table
    if cls is ExchangeSettings:
        table = doc["routes"][0].setdefault("exchange", {"audience": "orders-api"})
        return table
    if cls is FrontendEntrySettings:  # the base document turned into one [[frontends]] entry
        origin = doc["server"].pop("public_origin")
        entry = {"name": "app", "public_origin": origin, "cookie_name": "__Host-app", "host": origin.split("//")[1]}
        doc["frontends"] = [{**entry, "oidc": doc.pop("oidc"), "routes": doc.pop("routes")}]
        table = doc["frontends"][0]
        return table
    name = {ServerSettings: "server", SessionSettings: "session", OIDCSettings: "oidc"}.get(cls)
    if name is not None:
        table = doc[name]
        return table
    names = {
        TokenSettings: "tokens",
        FrontendSettings: "frontend",
        LoggingSettings: "logging",
        MetricsSettings: "metrics",
        TracingSettings: "tracing",
    }
    table = doc.setdefault(names[cls], {})
    return table


def _problems_with(cls: type[Any], name: str, value: object) -> list[str]:
    """The validator's problems with the base document where key ``name`` is ``value`` (or left out: ``...``)."""
    doc = copy.deepcopy(base_document())
    table = _table(doc, cls)
    if value is ...:
        table.pop(name, None)
    else:
        table[name] = value
    try:
        parse_config(doc, env={})
    except ConfigError as exc:
        return [p.split(".", 1)[-1] if not p.startswith(name) else p for p in exc.problems]
    return []


def _is_size(cls: type[Any], name: str) -> bool:
    """Whether the validator takes a size like ``64KiB`` for this int key."""
    return not any(p.startswith(f"{name}: expected int") for p in _problems_with(cls, name, "64KiB"))


def _is_required(cls: type[Any], name: str) -> bool:
    """Whether the validator refuses a document that leaves the key out."""
    return f"{name}: is required" in _problems_with(cls, name, ...)


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"


def _size(count: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= size and count % size == 0:
            return f"{count // size}{unit}"
    return f"{count}B"


def _type_and_default(cls: type[Any], f: dataclasses.Field[Any], hint: Any) -> tuple[str, str]:
    default: Any = f.default if f.default is not dataclasses.MISSING else dataclasses.MISSING
    if f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is float:
        kind, shown = "duration", None if default is dataclasses.MISSING else _duration(default)
    elif hint is int and _is_size(cls, f.name):
        kind, shown = "size", None if default is dataclasses.MISSING else _size(default)
    elif hint is bool:
        kind, shown = "boolean", None if default is dataclasses.MISSING else str(default).lower()
    elif hint == bool | None:  # an optional boolean: left out, another key decides
        kind, shown = "boolean", None
    elif origin is typing.Literal:
        kind, shown = "one of " + ", ".join(f"`{a}`" for a in args), None
    elif hint in (OIDCSettings, tuple[RouteSettings, ...], FrontendSettings | None):  # [[frontends]]' own sections
        section = {OIDCSettings: "[oidc]", FrontendSettings | None: "[frontend]"}.get(hint, "[[routes]]")
        kind, shown = (
            f"the keys of `{section}`",
            "*required*" if hint is OIDCSettings else "*none*" if hint != tuple[RouteSettings, ...] else "[]",
        )
    elif origin is tuple and args[0] is Secret:
        kind, shown = "array of strings (secrets)", None
    elif origin is tuple and args[0] == ipaddress.IPv4Network | ipaddress.IPv6Network:
        kind, shown = "array of CIDRs", None
    elif origin is tuple:
        kind, shown = "array of strings", None
    elif origin is Mapping:
        kind, shown = "table of strings", "{}"
    elif hint == ExchangeSettings | None:
        kind, shown = "inline table (below)", None
    elif hint in (int, str, Secret | None, str | None):
        kind = {int: "integer", str: "string"}.get(hint, "string (secret)" if hint == Secret | None else "string")
        shown = None
    else:
        raise AssertionError(f"{cls.__name__}.{f.name}: describe the type {hint!r} in tests/test_configuration_doc.py")
    if default is dataclasses.MISSING or _is_required(cls, f.name):
        return kind, "*required*"
    if shown is None:
        if default is None:
            shown = "*none*"
        elif isinstance(default, tuple):
            shown = "[" + ", ".join(f'"{v}"' for v in default) + "]"
        elif isinstance(default, str | int):
            shown = f'"{default}"' if isinstance(default, str) else str(default)
        else:
            raise AssertionError(f"{cls.__name__}.{f.name}: show the default {default!r}")
    return kind, shown


def _rows(cls: type[Any]) -> list[tuple[str, str, str, str]]:
    hints = typing.get_type_hints(cls, vars(settings_module))
    meanings = _meanings(cls)
    rows: list[tuple[str, str, str, str]] = []
    for f in dataclasses.fields(cls):
        if f.name not in meanings:
            raise AssertionError(f"{cls.__name__}.{f.name} has no #: comment saying what it means")
        if f.name in LISTEN_FIELDS and cls is ServerSettings:
            if f.name == "host":
                default = f'"{ServerSettings.host}:{ServerSettings.port}"'
                rows.append(("listen", 'string `"host:port"`', default, "Address and port to bind (IPv6 in brackets)."))
            continue
        kind, shown = _type_and_default(cls, f, hints[f.name])
        rows.append((f.name, kind, shown, meanings[f.name]))
    return rows


def render() -> str:
    assert {f.name for f in dataclasses.fields(Config)} - {"source"} == {s.strip("[]") for s, _ in SECTIONS}, (
        "a new section of Config needs its table here"
    )
    parts = [HEADER]
    for header, cls in SECTIONS:
        for title, table in ((header, cls), *SUBTABLES.get(cls, ())):
            parts.append(f"\n## `{title}`\n\n| key | type | default | meaning |\n| --- | --- | --- | --- |\n")
            for key, kind, shown, meaning in _rows(table):
                cell = meaning.replace("|", "\\|")
                shown = shown if shown.startswith("*") else f"`{shown}`"
                parts.append(f"| `{key}` | {kind} | {shown} | {cell} |\n")
    parts.append(ENVIRONMENT)
    return "".join(parts)


def test_the_configuration_reference_matches_the_dataclasses() -> None:
    expected = render()
    actual = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    assert actual == expected, "docs/configuration.md is stale: run .venv/bin/python -m tests.test_configuration_doc"


def test_a_key_without_a_meaning_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    source = inspect.getsource(TokenSettings).replace("    #: Refresh an access token", "    # Refresh an access token")
    monkeypatch.setattr(inspect, "getsource", lambda obj: source)
    with pytest.raises(AssertionError, match=r"TokenSettings.refresh_leeway has no #: comment"):
        _rows(TokenSettings)


def test_every_key_of_the_example_file_is_in_the_reference() -> None:
    import tomllib

    example = tomllib.loads((DOC.parent.parent / "config" / "production.toml").read_text(encoding="utf-8"))
    page = render()
    for section, values in example.items():
        tables = values if isinstance(values, list) else [values]
        for table in tables:
            for key in table:
                assert f"| `{key}` |" in page, f"{section}.{key}"


if __name__ == "__main__":
    DOC.write_text(render(), encoding="utf-8")
