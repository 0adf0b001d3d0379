"""The config's schema: defaults come from the settings dataclasses (stated once), and an unknown key is answered
with the nearest known key of its table."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import ECKey

from bff.config import (
    Config,
    LoggingSettings,
    MetricsSettings,
    OIDCSettings,
    RouteSettings,
    ServerSettings,
    SessionSettings,
    TokenSettings,
    TracingSettings,
    parse_config,
)
from bff.errors import ConfigError
from tests.support.configs import base_document

#: Settings dataclass -> how to find its parsed section in a Config.
SECTIONS: dict[type[Any], Any] = {
    ServerSettings: lambda c: c.server,
    SessionSettings: lambda c: c.session,
    OIDCSettings: lambda c: c.oidc,
    RouteSettings: lambda c: c.routes[0],
    TokenSettings: lambda c: c.tokens,
    LoggingSettings: lambda c: c.logging,
    MetricsSettings: lambda c: c.metrics,
    TracingSettings: lambda c: c.tracing,
}
#: Another valid value for the defaults whose type alone does not say what else is valid.
OTHER_STRINGS = {
    "store": "redis://127.0.0.1:6379/0",
    "cookie_name": "__Host-other",
    "same_site": "lax",
    "token_endpoint_auth_method": "client_secret_post",
    "format": "json",
    "level": "warning",
    "listen": "127.0.0.1:9464",
    "par": "off",
    "request_object": "always",
    "profile": "fapi2",
}


def _other(name: str, default: object) -> object:
    """A valid value different from ``default``, for the key ``name``."""
    if isinstance(default, bool):
        return not default
    if isinstance(default, int | float):
        return default + 1
    if isinstance(default, str):
        return OTHER_STRINGS[name]
    if isinstance(default, tuple) and default:
        return default[:1] if "openid" not in default else ("openid",)
    raise AssertionError(f"add a valid other value for {name}={default!r}")


def _patchable() -> list[tuple[type[Any], str]]:
    """Every (dataclass, field) whose default a document that leaves the key out must get."""
    present = base_document()
    in_document = {
        ServerSettings: {*present["server"], "host", "port"},
        SessionSettings: set(present["session"]),
        OIDCSettings: {*present["oidc"], "redirect_uri"},
        RouteSettings: set(present["routes"][0]),
        TokenSettings: set(),
        LoggingSettings: set(),
        MetricsSettings: set(),
        TracingSettings: set(),
    }
    out = []
    for cls in SECTIONS:
        for f in dataclasses.fields(cls):
            if f.name in in_document[cls] or f.default is dataclasses.MISSING:
                continue
            if f.default is None or f.default == ():  # an absent optional key: nothing to default to
                continue
            if (cls, f.name) == (RouteSettings, "certificate_bound"):
                continue  # true is valid only with client certificates (tests/test_config_client_tls.py)
            out.append((cls, f.name))
    return out


@pytest.mark.parametrize(("cls", "name"), _patchable(), ids=lambda v: getattr(v, "__name__", v))
def test_a_missing_key_takes_the_default_stated_on_its_dataclass(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cls: type[Any], name: str
) -> None:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    other = _other(name, fields[name].default)
    monkeypatch.setattr(fields[name], "default", other)
    doc = copy.deepcopy(base_document())
    if (cls, name) == (OIDCSettings, "dpop"):  # dpop = true needs its key: the companion key is given
        key = tmp_path / "dpop.pem"
        key.write_bytes(ECKey.generate_key("P-256", private=True).as_pem(private=True))
        doc["oidc"]["dpop_key_file"] = str(key)
    if (cls, name) in ((OIDCSettings, "request_object"), (OIDCSettings, "profile")):
        # Signed request objects need the client's key; fapi2 needs private_key_jwt and DPoP: companions given.
        key = tmp_path / "client.pem"
        key.write_bytes(ECKey.generate_key("P-256", private=True).as_pem(private=True))
        doc["oidc"].update(token_endpoint_auth_method="private_key_jwt", private_key_file=str(key))
        if name == "profile":
            doc["oidc"].update(dpop=True, dpop_key_file=str(key))
    config = parse_config(doc, env={})
    assert getattr(SECTIONS[cls](config), name) == other


def test_every_section_of_the_document_has_its_dataclass() -> None:
    sections = {f.name for f in dataclasses.fields(Config)} - {"source", "frontend", "frontends"}
    assert sections == {"server", "session", "oidc", "routes", "tokens", "logging", "metrics", "tracing"}
    assert len(_patchable()) >= 25  # the parametrisation above really covers the defaults


def _problems(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(doc, env={})
    return info.value.problems


@pytest.mark.parametrize(
    ("where", "typo", "meant", "path"),
    [
        (("server",), "max_conections", "max_connections", "server.max_conections"),
        (("session",), "idle_timout", "idle_timeout", "session.idle_timout"),
        (("oidc",), "clientid", "client_id", "oidc.clientid"),
        (("routes", 0), "strip_prefx", "strip_prefix", "routes[0].strip_prefx"),
        ((), "oidcc", "oidc", "oidcc"),
        ((), "route", "routes", "route"),
    ],
)
def test_an_unknown_key_names_the_key_it_is_nearest(
    where: tuple[str | int, ...], typo: str, meant: str, path: str
) -> None:
    doc = base_document()
    table: Any = doc
    for step in where:
        table = table[step]
    table[typo] = table.get(meant, {}) if not where else "x"
    assert _problems(doc) == [f"{path}: unknown key (did you mean `{meant}`? see config/ for every supported key)"]


def test_an_unknown_key_like_no_known_one_gets_no_guess() -> None:
    doc = base_document()
    doc["session"]["zebra"] = 1
    doc["tokens"] = {"qqq": 1}
    assert _problems(doc) == [
        "session.zebra: unknown key (check the spelling; see config/ for every supported key)",
        "tokens.qqq: unknown key (check the spelling; see config/ for every supported key)",
    ]
