"""``[[frontends]]`` validation (bff.config.frontends): every problem with its key path, collected at once."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bff.cli import main
from bff.config import explain_config, parse_config
from bff.config.frontends import frontend_config, store_namespace
from bff.errors import ConfigError
from tests.support.configs import base_document
from tests.test_config import CONFIG_DIR, EXAMPLE_ENV


def entry(name: str, origin: str, **extra: Any) -> dict[str, Any]:
    doc = base_document(public_origin=origin, issuer=f"https://idp-{name}.example.com")
    host = origin.split("//", 1)[1]
    return {
        "name": name,
        "public_origin": origin,
        "cookie_name": f"__Host-{name}",
        "host": host,
        "oidc": doc["oidc"],
        "routes": doc["routes"],
        **extra,
    }


def multi_document(*entries: dict[str, Any]) -> dict[str, Any]:
    doc = base_document()
    for key in ("oidc", "routes"):
        doc.pop(key)
    doc["server"].pop("public_origin")
    doc["frontends"] = list(entries) or [entry("a", "https://a.example.com"), entry("b", "https://b.example.com")]
    return doc


def problems(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(copy.deepcopy(doc), env={})
    return info.value.problems


def test_two_frontends_by_host_are_read_with_their_own_origin_cookie_idp_and_routes() -> None:
    config = parse_config(multi_document(), env={})
    a, b = config.frontends
    assert (a.name, a.host, a.cookie_name, a.oidc.issuer) == (
        "a",
        "a.example.com",
        "__Host-a",
        "https://idp-a.example.com",
    )
    assert b.oidc.redirect_uri == "https://b.example.com/bff/callback"
    single = frontend_config(config, b)
    assert single.server.public_origin == "https://b.example.com"
    assert single.session.cookie_name == "__Host-b"
    assert single.routes == b.routes
    assert single.frontends == ()
    assert store_namespace("b") == "fe:b:"


def test_a_path_prefixed_frontend_has_its_callback_and_logout_page_under_its_prefix() -> None:
    doc = multi_document(
        entry("a", "https://a.example.com"), entry("shop", "https://a.example.com", path_prefix="/shop/")
    )
    shop = parse_config(doc, env={}).frontends[1]
    assert shop.path_prefix == "/shop"
    assert shop.oidc.redirect_uri == "https://a.example.com/shop/bff/callback"
    assert shop.oidc.post_logout_redirect_uri == "https://a.example.com/shop/"


def test_the_single_frontend_form_is_unchanged() -> None:
    config = parse_config(base_document(), env={})
    assert config.frontends == ()
    assert config.session.cookie_name == "__Host-bff"


def test_top_level_per_frontend_keys_are_refused_with_their_key_path() -> None:
    doc = multi_document()
    base = base_document()
    doc["oidc"], doc["routes"], doc["frontend"] = base["oidc"], base["routes"], {"directory": "/nowhere"}
    doc["server"]["public_origin"] = "https://a.example.com"
    doc["session"]["cookie_name"] = "__Host-x"
    found = problems(doc)
    assert found == [
        "oidc: not allowed with [[frontends]]; set it per frontend (frontends[].oidc)",
        "routes: not allowed with [[frontends]]; set it per frontend (frontends[].routes)",
        "frontend: not allowed with [[frontends]]; set it per frontend (frontends[].frontend)",
        "server.public_origin: not allowed with [[frontends]]; set it per frontend (frontends[].public_origin)",
        "session.cookie_name: not allowed with [[frontends]]; set it per frontend (frontends[].cookie_name)",
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"name": ""}, "frontends[1].name: must not be empty"),
        ({"name": "B_2"}, "frontends[1].name: must be 1-32 of [a-z0-9-]"),
        ({"name": "-b"}, "frontends[1].name: must be 1-32 of [a-z0-9-]"),
        ({"name": "a"}, "frontends[1].name: duplicates frontends[0].name"),
        ({"cookie_name": "__Host-a"}, "frontends[1].cookie_name: duplicates frontends[0].cookie_name"),
        ({"cookie_name": "session"}, "frontends[1].cookie_name: must start with __Host-"),
        ({"cookie_name": ""}, "frontends[1].cookie_name: must not be empty"),
        ({"public_origin": ""}, "frontends[1].public_origin: must not be empty"),
        ({"public_origin": "http://b.example.com"}, "frontends[1].public_origin: must use https"),
        ({"host": "c.example.com"}, "frontends[1].host: must be public_origin's host"),
        ({"host": ""}, "frontends[1].host: set host or path_prefix (or both)"),
        (
            {"host": "a.example.com", "public_origin": "https://a.example.com"},
            "frontends[1]: selects the same requests",
        ),
        ({"path_prefix": "/"}, "frontends[1].path_prefix: must not be '/'"),
        ({"path_prefix": "/bff/x"}, "frontends[1].path_prefix: overlaps bff's own endpoints"),
        ({"path_prefix": "shop"}, "frontends[1].path_prefix: must be a plain absolute path like /shop"),
        ({"path_prefix": "/a/../b"}, "frontends[1].path_prefix: must be a plain absolute path like /shop"),
        ({"path_prefix": "/sh op"}, "frontends[1].path_prefix: must be a plain absolute path like /shop"),
        ({"path_prefix": "/shop\x00"}, "frontends[1].path_prefix: must be a plain absolute path like /shop"),
        ({"path_prefix": "/shop\x7f"}, "frontends[1].path_prefix: must be a plain absolute path like /shop"),
        ({"oidc": {"client_id": "x"}}, "frontends[1].oidc.issuer: is required"),
        ({"routes": [{"path": "/api", "upstream": "ftp://x"}]}, "frontends[1].routes[0].upstream: must be an absolute"),
        ({"hots": "b.example.com"}, "frontends[1].hots: unknown key (did you mean `host`?"),
        ({"frontend": {"directory": "/no/such/dir"}}, "frontends[1].frontend.directory: directory not found"),
    ],
)
def test_each_problem_of_an_entry_names_its_key(change: dict[str, Any], expected: str) -> None:
    second = entry("b", "https://b.example.com")
    second.update(change)
    found = problems(multi_document(entry("a", "https://a.example.com"), second))
    assert any(p.startswith(expected) for p in found), found


def test_name_cookie_and_origin_are_required() -> None:
    found = problems(multi_document({"host": "b.example.com", "oidc": base_document()["oidc"]}))
    assert found == [
        "frontends[0].name: is required",
        "frontends[0].public_origin: is required",
        "frontends[0].cookie_name: is required",
    ]


def test_a_dpop_route_needs_its_own_frontends_dpop() -> None:
    second = entry("b", "https://b.example.com")
    second["routes"][0]["dpop"] = True
    found = problems(multi_document(entry("a", "https://a.example.com"), second))
    assert "frontends[1].routes[0].dpop: needs [oidc] dpop = true (tokens are bound at the token endpoint)" in found


@pytest.mark.parametrize("value", [[], {"name": "a"}, ["a"]])
def test_frontends_must_be_a_non_empty_array_of_tables(value: object) -> None:
    doc = multi_document()
    doc["frontends"] = value
    found = problems(doc)
    assert found[0] in (
        "frontends: expected a non-empty array of tables ([[frontends]])",
        "frontends[0]: expected a table",
    ), found


def test_the_example_file_passes_bff_check(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(name, value)
    assert main(["check", "--config", str(CONFIG_DIR / "multi-frontend.toml")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(
        ": OK (2 frontend(s), 2 route(s), store rediss://, listen 0.0.0.0:8000 (all IPv4 interfaces))"
    )
    assert out[1:] == [
        "  frontend shop: shop.example.com -> https://shop.example.com, cookie __Host-shop, "
        "issuer https://login.example.com/realms/customers, 1 route(s)",
        "  frontend admin: admin.example.com/console -> https://admin.example.com, cookie __Host-admin, "
        "issuer https://login.example.com/realms/staff, 1 route(s)",
    ]


def test_explain_shows_each_frontends_settings_with_their_lines_and_masks_their_secrets() -> None:
    lines = explain_config(CONFIG_DIR / "multi-frontend.toml", env=EXAMPLE_ENV)
    text = "\n".join(lines)
    assert EXAMPLE_ENV["BFF_CLIENT_SECRET"] not in text
    assert not any(line.startswith(("oidc.", "routes[")) for line in lines)  # only per frontend
    by_key = {line.split(" = ", 1)[0]: line for line in lines}
    assert by_key["frontends[1].path_prefix"].endswith("multi-frontend.toml:46")
    assert by_key["frontends[1].oidc.client_secret"].split("#")[0].strip().endswith("= ********")
    assert by_key["frontends[1].routes[0].methods"].endswith("multi-frontend.toml:59")
    assert by_key["frontends[0].oidc.timeout"].endswith("# default")
