"""Environment overrides of ``[[frontends]]`` entries (``BFF_FRONTENDS__<INDEX or NAME>__...``): merged before
validation, so each value meets the file's validators; every wrong index, name or key is a specific problem."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from typing import Any

import pytest

from bff.config import parse_config
from bff.config.values import Secret
from bff.errors import ConfigError
from tests.test_config import CONFIG_DIR, EXAMPLE_ENV
from tests.test_config_frontends import entry, multi_document

SECRET = "admin-client-secret-from-the-environment-0123"


def doc() -> dict[str, Any]:
    return multi_document(entry("shop", "https://shop.example.com"), entry("back-office", "https://bo.example.com"))


def problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(copy.deepcopy(doc()), env=env)
    return info.value.problems


def test_keys_of_an_entry_its_oidc_and_its_routes_are_set_by_index_or_by_name() -> None:
    original = doc()
    config = parse_config(
        original,
        env={
            "BFF_FRONTENDS__0__COOKIE_NAME": "__Host-shop2",
            "BFF_FRONTENDS__BACK_OFFICE__OIDC__CLIENT_SECRET": SECRET,
            "BFF_FRONTENDS__BACK_OFFICE__OIDC__SCOPES": '["openid", "email"]',
            "BFF_FRONTENDS__1__ROUTES__0__UPSTREAM": "https://other.example.net",
            "BFF_FRONTENDS__1__ROUTES__1__PATH": "/api/more",
            "BFF_FRONTENDS__1__ROUTES__1__UPSTREAM": "https://more.example.net",
        },
    )
    shop, office = config.frontends
    assert shop.cookie_name == "__Host-shop2"
    assert office.oidc.client_secret == Secret(SECRET)
    assert office.oidc.scopes == ("openid", "email")
    assert office.routes[0].upstream == "https://other.example.net"
    assert office.routes[0].path == "/api/orders"  # the rest of the route is the file's
    assert (office.routes[1].path, office.routes[1].upstream) == ("/api/more", "https://more.example.net")
    assert shop.oidc.client_secret != office.oidc.client_secret  # only the named frontend's
    assert original == doc()  # the parsed document is not changed in place


def test_an_overridden_value_meets_the_validators_and_the_problem_names_the_variable() -> None:
    found = problems({"BFF_FRONTENDS__SHOP__COOKIE_NAME": "plain", "BFF_FRONTENDS__1__ROUTES__0__TIMEOUT": "soon"})
    assert any(
        p.startswith("frontends[0].cookie_name (from BFF_FRONTENDS__SHOP__COOKIE_NAME): must start") for p in found
    )
    assert any(
        p.startswith("frontends[1].routes[0].timeout (from BFF_FRONTENDS__1__ROUTES__0__TIMEOUT):") for p in found
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("BFF_FRONTENDS__2__HOST", "BFF_FRONTENDS__2__HOST: frontends[2] does not exist: the file has 2 frontend(s)"),
        (
            "BFF_FRONTENDS__ADMIN__HOST",
            "BFF_FRONTENDS__ADMIN__HOST: no frontend named 'admin' in the file (names: SHOP, BACK_OFFICE",
        ),
        ("BFF_FRONTENDS__0__HOSTNAME", "BFF_FRONTENDS__0__HOSTNAME: no such setting frontends[0].hostname"),
        ("BFF_FRONTENDS__0__OIDC__SECRET", "BFF_FRONTENDS__0__OIDC__SECRET: no such setting frontends[0].oidc.secret"),
        ("BFF_FRONTENDS__0__SESSION__STORE", "BFF_FRONTENDS__0__SESSION__STORE: a frontend key is"),
        ("BFF_FRONTENDS__0", "BFF_FRONTENDS__0: a frontend key is"),
        ("BFF_FRONTENDS__0__ROUTES__X__PATH", "BFF_FRONTENDS__0__ROUTES__X__PATH: a frontend key is"),
        (
            "BFF_FRONTENDS__0__ROUTES__3__PATH",
            "BFF_FRONTENDS__0__ROUTES__3__PATH: frontends[0].routes[3] does not exist and routes[1] is not set",
        ),
    ],
)
def test_an_unknown_index_name_or_key_is_a_specific_problem(name: str, expected: str) -> None:
    found = problems({name: "https://x.example.com"})
    assert any(p.startswith(expected) for p in found), found


def test_one_key_set_by_index_and_by_name_is_a_problem() -> None:
    found = problems({"BFF_FRONTENDS__0__HOST": "shop.example.com", "BFF_FRONTENDS__SHOP__HOST": "shop.example.com"})
    assert "BFF_FRONTENDS__SHOP__HOST: frontends[0].host is also set by BFF_FRONTENDS__0__HOST; set it once" in found


def test_without_frontends_in_the_file_the_environment_adds_none() -> None:
    from tests.support.configs import base_document

    with pytest.raises(ConfigError) as info:
        parse_config(base_document(), env={"BFF_FRONTENDS__0__NAME": "extra"})
    assert info.value.problems == [
        "BFF_FRONTENDS__0__NAME: the file has no [[frontends]]; the environment does not add any"
    ]


def test_bff_check_explain_shows_a_frontends_override_with_its_variable_and_masks_it() -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BFF_")},
        **EXAMPLE_ENV,
        "BFF_FRONTENDS__ADMIN__OIDC__CLIENT_SECRET": SECRET,
        "BFF_FRONTENDS__0__ROUTES__0__TIMEOUT": "45s",
    }
    out = subprocess.run(
        [sys.executable, "-m", "bff", "check", "--config", str(CONFIG_DIR / "multi-frontend.toml"), "--explain"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert SECRET not in out
    lines = {line.split(" = ", 1)[0]: line for line in out.splitlines()}
    secret = lines["frontends[1].oidc.client_secret"]
    assert secret.split("#")[0].strip().endswith("= ********")
    assert secret.endswith("# env BFF_FRONTENDS__ADMIN__OIDC__CLIENT_SECRET")
    assert lines["frontends[0].routes[0].timeout"].endswith("# env BFF_FRONTENDS__0__ROUTES__0__TIMEOUT")
    assert '"45s"' in lines["frontends[0].routes[0].timeout"]
    assert "multi-frontend.toml:" in lines["frontends[0].oidc.client_secret"]  # the other frontend's, from the file


def test_a_top_level_override_of_a_per_frontend_key_names_the_frontend_form() -> None:
    found = problems(
        {
            "BFF_OIDC__CLIENT_SECRET": SECRET,
            "BFF_ROUTES__0__UPSTREAM": "https://x.example.com",
            "BFF_SERVER__PUBLIC_ORIGIN": "https://x.example.com",
            "BFF_SESSION__IDLE_TIMEOUT": "20m",  # shared: fine
        }
    )
    assert [p for p in found if p.startswith("BFF_")] == [
        "BFF_OIDC__CLIENT_SECRET: sets oidc.client_secret, which is per frontend with [[frontends]]; use "
        "BFF_FRONTENDS__<INDEX or NAME>__OIDC__CLIENT_SECRET",
        "BFF_ROUTES__0__UPSTREAM: sets routes[0].upstream, which is per frontend with [[frontends]]; use "
        "BFF_FRONTENDS__<INDEX or NAME>__ROUTES__0__UPSTREAM",
        "BFF_SERVER__PUBLIC_ORIGIN: sets server.public_origin, which is per frontend with [[frontends]]; use "
        "BFF_FRONTENDS__<INDEX or NAME>__PUBLIC_ORIGIN",
    ]
    assert not any(SECRET in p for p in found)
