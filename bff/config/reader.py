"""The reading half of ``bff.config``: a TOML table walker that records problems with their key paths instead of
raising at the first one (oauth2-proxy ``pkg/validation`` style), plus the value parsers (durations, sizes, URLs).

A :class:`Reader` walks one table against the settings dataclass it fills (its ``schema``): a key the document
leaves out takes that dataclass's default, so defaults are stated once, on the dataclasses. A key the table does
not know is a problem, with the nearest known key suggested (``difflib``). A problem names the key and what it
expects, never the value found: a value may be a secret (``${VAR}``, an override). Standard library only.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*$")
_SIZE_UNITS = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "KB": 1000, "MB": 1000**2, "GB": 1000**3}
HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")

T = TypeVar("T")
C = TypeVar("C", bound=str)
#: How alike an unknown key and a known one must be (difflib ratio) to suggest the known one.
_SUGGEST_CUTOFF = 0.7


class _Unset:
    """Marks an argument left out: the default then comes from the reader's schema dataclass."""


_UNSET = _Unset()


def schema_default(schema: type[Any], name: str) -> Any:
    """The default of field ``name`` of the dataclass ``schema`` (a factory's product for mutable defaults)."""
    for f in dataclasses.fields(schema):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            raise LookupError(f"{schema.__name__}.{name} has no default")
    raise LookupError(f"{schema.__name__} has no field {name}")


def choose(value: str, options: tuple[C, ...]) -> C | None:
    """``value`` as the member of ``options`` it equals (typed as the options' Literal), or None."""
    for option in options:
        if option == value:
            return option
    return None


def parse_duration(value: object) -> float:
    """``30s``, ``15m``, ``12h``, ``1d``, ``250ms`` or a number of seconds."""
    if isinstance(value, bool):  # a bool is an int to Python, never a duration to a person
        raise ValueError("expected a duration like 30s, 15m or 12h")  # noqa: TRY004 - reported as a config problem
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("must not be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
    raise ValueError("expected a duration like 30s, 15m or 12h")


def parse_size(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a size like 10MiB")  # noqa: TRY004 - reported as a config problem
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            return int(m.group(1)) * _SIZE_UNITS[m.group(2)]
    raise ValueError("expected a size like 64KiB or 10MiB")


def is_loopback_host(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Reader:
    """Walks one TOML table, recording problems with their key path instead of raising at the first one."""

    def __init__(
        self,
        data: Mapping[str, Any],
        path: str,
        problems: list[str],
        env: Mapping[str, str],
        schema: type[Any] | None = None,
    ) -> None:
        self.data = data
        self.path = path
        self.problems = problems
        self.env = env
        self.schema = schema
        self.seen: set[str] = set()

    def default(self, name: str) -> Any:
        """The schema dataclass's default for ``name``."""
        if self.schema is None:
            raise LookupError(f"{self.path or 'the root'} has no schema to take a default of {name} from")
        return schema_default(self.schema, name)

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def problem(self, name: str, message: str) -> None:
        self.problems.append(f"{self.key(name)}: {message}")

    def _expand(self, name: str, value: str) -> str | None:
        missing: list[str] = []

        def repl(m: re.Match[str]) -> str:
            var = m.group(1)
            if var not in self.env:
                missing.append(var)
                return ""
            return self.env[var]

        expanded = _ENV_REF.sub(repl, value)
        if missing:
            self.problem(name, "environment variable " + ", ".join(f"${{{v}}}" for v in missing) + " is not set")
            return None
        return expanded

    def raw(self, name: str) -> Any:
        self.seen.add(name)
        return self.data.get(name)

    def get(self, name: str, kind: type[T], default: T | _Unset = _UNSET, *, required: bool = False) -> T:
        if isinstance(default, _Unset):
            return self.get(name, kind, cast(T, self.default(name)), required=required)
        self.seen.add(name)
        if name not in self.data:
            if required:
                self.problem(name, "is required")
            return default
        value = self.data[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.problem(name, f"expected {kind.__name__}, got {type(value).__name__}")
            return default
        if isinstance(value, str):
            expanded = self._expand(name, value)
            return default if expanded is None else cast(T, expanded)
        return value

    def choice(self, name: str, options: tuple[C, ...]) -> C:
        """A string that must be one of ``options`` (a Literal's members); on a problem, the schema's default."""
        default: C = self.default(name)
        fallback: str = default
        value = self.get(name, str, fallback)
        chosen = choose(value, options)
        if chosen is None:
            self.problem(name, f"expected one of {', '.join(options)}")
            return default
        return chosen

    def optional(self, name: str) -> str | None:
        """An optional string: None when absent or empty (the schema's default for such keys)."""
        return self.get(name, str, "") or None

    def string_list(self, name: str, default: tuple[str, ...] | _Unset = _UNSET) -> tuple[str, ...]:
        if isinstance(default, _Unset):
            return self.string_list(name, cast("tuple[str, ...]", self.default(name)))
        self.seen.add(name)
        if name not in self.data:
            return default
        value = self.data[name]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(name, "expected a list of strings")
            return default
        out: list[str] = []
        for i, item in enumerate(value):
            expanded = self._expand(f"{name}[{i}]", item)
            if expanded is not None:
                out.append(expanded)
        return tuple(out)

    def string_map(self, name: str) -> dict[str, str]:
        self.seen.add(name)
        value = self.data.get(name, {})
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            self.problem(name, "expected a table of strings")
            return {}
        out: dict[str, str] = {}
        for k, v in value.items():
            expanded = self._expand(f"{name}.{k}", v)
            if expanded is not None:
                out[k] = expanded
        return out

    def converted(self, name: str, convert: Callable[[object], T], default: T | _Unset = _UNSET) -> T:
        if isinstance(default, _Unset):
            return self.converted(name, convert, cast(T, self.default(name)))
        self.seen.add(name)
        if name not in self.data:
            return default
        value = self.data[name]
        if isinstance(value, str):
            expanded = self._expand(name, value)
            if expanded is None:
                return default
            value = expanded
        try:
            return convert(value)
        except ValueError as exc:
            self.problem(name, str(exc))
            return default

    def finish(self) -> None:
        """Report every key of the table that no validator read, suggesting the nearest known one."""
        for name in self.data:
            if name not in self.seen:
                near = difflib.get_close_matches(name, sorted(self.seen), n=1, cutoff=_SUGGEST_CUTOFF)
                hint = f"did you mean `{near[0]}`? " if near else "check the spelling; "
                self.problem(name, f"unknown key ({hint}see config/ for every supported key)")


def table(parent: Reader, name: str, schema: type[Any] | None = None, *, required: bool = False) -> Reader:
    parent.seen.add(name)
    value = parent.data.get(name)
    if value is None:
        if required:
            parent.problem(name, "section is required")
        value = {}
    elif not isinstance(value, dict):
        parent.problem(name, "expected a table")
        value = {}
    return Reader(value, parent.key(name), parent.problems, parent.env, schema)


def tables(parent: Reader, name: str, schema: type[Any], *, required: bool = False) -> Iterator[tuple[int, Reader]]:
    """An array of tables (``[[name]]``): each table's index and Reader, in order; an entry that is not a table is
    a problem of its own, and so is a missing (when ``required``) or malformed array."""
    parent.seen.add(name)
    raw: Any = parent.data.get(name, [])
    if not isinstance(raw, list) or (required and not raw):
        expected = "a non-empty array of tables" if required else "an array of tables"
        parent.problem(name, f"expected {expected} ([[{name}]])")
        return
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            parent.problem(f"{name}[{index}]", "expected a table")
            continue
        yield index, Reader(item, parent.key(f"{name}[{index}]"), parent.problems, parent.env, schema)


def existing_file(r: Reader, name: str) -> str | None:
    """An optional path key that must name an existing file."""
    path = r.optional(name)
    if path and not Path(path).is_file():
        r.problem(name, "file not found")
    return path


def check_url(r: Reader, name: str, url: str, *, allow_http_loopback: bool = True, path_ok: bool = True) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError:
        # Not quoted: a malformed URL may carry credentials.
        r.problem(name, "is not a valid URL (a malformed IPv6 literal in brackets or port?)")
        return False
    if parts.scheme not in ("https", "http") or not parts.hostname:
        r.problem(name, "must be an absolute http(s) URL")
        return False
    if parts.username or parts.password:
        r.problem(name, "must not carry credentials in the URL")
        return False
    if parts.scheme == "http" and not (allow_http_loopback and is_loopback_host(parts.hostname)):
        r.problem(name, "must use https (plain http is allowed only for localhost/127.0.0.1)")
        return False
    if "*" in parts.netloc:
        r.problem(name, "must not contain a wildcard")
        return False
    if parts.fragment:
        r.problem(name, "must not contain a fragment")
        return False
    if not path_ok and parts.path not in ("", "/"):
        r.problem(name, "must be an origin (scheme://host[:port]) without a path")
        return False
    return True


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    default_port = {"http": 80, "https": 443}[parts.scheme]
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default_port else "")
