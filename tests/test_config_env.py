"""Per-key environment overrides (``BFF_<SECTION>__<KEY>``): read like the file, validated like the file."""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
from pathlib import Path
from typing import Any

import pytest

from bff.cli import main
from bff.config import ExchangeSettings, Secret, ServerSettings, parse_config
from bff.errors import ConfigError
from tests.support.configs import CLIENT_SECRET, SESSION_KEY, base_document
from tests.test_config import EXAMPLE_ENV

OTHER_KEY = "z" * 20 + "-another-session-key-0123456789"


def problems(env: dict[str, str], doc: dict[str, Any] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(copy.deepcopy(doc or base_document()), env=env)
    return info.value.problems


def test_string_keys_are_overridden() -> None:
    config = parse_config(
        base_document(),
        env={"BFF_SESSION__STORE": "redis://127.0.0.1:6390/0", "BFF_ROUTES__0__UPSTREAM": "https://other.example.net"},
    )
    assert config.session.store == "redis://127.0.0.1:6390/0"
    assert config.routes[0].upstream == "https://other.example.net"
    assert config.routes[0].path == "/api/orders"  # the rest of the route is the file's


def test_typed_values_are_written_as_in_the_file() -> None:
    config = parse_config(
        base_document(),
        env={
            "BFF_SERVER__TRUSTED_PROXIES": '["10.0.0.0/8", "192.168.0.0/16"]',
            "BFF_SERVER__MAX_CONNECTIONS": "12",
            "BFF_SERVER__HEADER_TIMEOUT": "250ms",
            "BFF_SERVER__KEEP_ALIVE_TIMEOUT": "7",
            "BFF_ROUTES__0__MAX_BODY": "1MiB",
            "BFF_ROUTES__0__STRIP_PREFIX": "false",
            "BFF_ROUTES__0__SET_HEADERS": '{ "X-Tenant" = "acme" }',
            "BFF_SESSION__KEYS": f'["{SESSION_KEY}", "{OTHER_KEY}"]',
            "BFF_OIDC__CLIENT_ID": "12345",  # a string key keeps digits as a string
        },
    )
    assert config.server.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.0.0/16"),
    )
    assert config.server.max_connections == 12
    assert config.server.header_timeout == 0.25
    assert config.server.keep_alive_timeout == 7.0
    assert config.routes[0].max_body == 1024 * 1024
    assert config.routes[0].strip_prefix is False
    assert config.routes[0].set_headers == {"X-Tenant": "acme"}
    assert config.session.keys == (Secret(SESSION_KEY), Secret(OTHER_KEY))
    assert config.oidc.client_id == "12345"


def test_a_bad_value_gets_the_file_validators_message_and_the_variable_name() -> None:
    found = problems({"BFF_SESSION__STORE": "postgres://db", "BFF_SERVER__MAX_CONNECTIONS": "0"})
    assert found == [
        "server.max_connections (from BFF_SERVER__MAX_CONNECTIONS): must be between 1 and 1000000",
        "session.store (from BFF_SESSION__STORE): expected memory://, redis://, rediss://, unix://, redis+sentinel://, "
        "rediss+sentinel://, redis+cluster:// or rediss+cluster://",
    ]


#: Stands for a secret put into the wrong variable: no problem may repeat it.
LEAKED = "s3cr3t-0123456789"
#: The same, for keys that take numbers.
LEAKED_NUMBER = "987654321"


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"BFF_SESSION__IDLE_TIMEOUT": LEAKED}, "session.idle_timeout"),
        ({"BFF_SERVER__HEADER_TIMEOUT": f"{LEAKED}s"}, "server.header_timeout"),
        ({"BFF_TOKENS__REFRESH_LEEWAY": LEAKED}, "tokens.refresh_leeway"),
        ({"BFF_ROUTES__0__MAX_BODY": LEAKED}, "routes[0].max_body"),
        ({"BFF_SESSION__SAME_SITE": LEAKED}, "session.same_site"),
        ({"BFF_ROUTES__0__TOKEN": LEAKED}, "routes[0].token"),
        ({"BFF_OIDC__TOKEN_ENDPOINT_AUTH_METHOD": LEAKED}, "oidc.token_endpoint_auth_method"),
        ({"BFF_LOGGING__LEVEL": LEAKED}, "logging.level"),
        ({"BFF_ROUTES__0__UPSTREAM": f"ftp://user:{LEAKED}@x"}, "routes[0].upstream"),
        ({"BFF_OIDC__ISSUER": LEAKED}, "oidc.issuer"),
        ({"BFF_OIDC__REDIRECT_URI": f"https://{LEAKED}.example/cb"}, "oidc.redirect_uri"),
        ({"BFF_SESSION__STORE": f"{LEAKED}://x"}, "session.store"),
        ({"BFF_SERVER__LISTEN": f"{LEAKED}:x"}, "server.listen"),
        ({"BFF_SERVER__LISTEN": f"[{LEAKED}]:80"}, "server.listen"),
        ({"BFF_SERVER__TRUSTED_PROXIES": f'["{LEAKED}"]'}, "server.trusted_proxies[0]"),
        ({"BFF_ROUTES__0__PATH": f"/{LEAKED}/../x"}, "routes[0].path"),
        ({"BFF_ROUTES__0__METHODS": f'["{LEAKED}"]'}, "routes[0].methods[0]"),
        ({"BFF_ROUTES__0__SET_HEADERS": f'{{ "Authorization: {LEAKED}" = "x" }}'}, "routes[0].set_headers"),
        ({"BFF_OIDC__ID_TOKEN_SIGNING_ALGS": f'["{LEAKED}"]'}, "oidc.id_token_signing_algs[0]"),
        (
            {"BFF_OIDC__TOKEN_ENDPOINT_AUTH_METHOD": "private_key_jwt", "BFF_OIDC__PRIVATE_KEY_FILE": f"/{LEAKED}"},
            "oidc.private_key_file",
        ),
        ({"BFF_FRONTEND__DIRECTORY": f"/{LEAKED}"}, "frontend.directory"),
        ({"BFF_SERVER__MAX_CONNECTIONS": LEAKED_NUMBER}, "server.max_connections"),
        ({"BFF_SESSION__MAX_PENDING_LOGINS": LEAKED_NUMBER}, "session.max_pending_logins"),
        ({"BFF_SESSION__WRITE_FORMAT": LEAKED_NUMBER}, "session.write_format"),
        ({"BFF_SESSION__STORE_REPLICAS": LEAKED_NUMBER}, "session.store_replicas"),
        ({"BFF_TOKENS__REFRESH_TIMEOUT": LEAKED_NUMBER}, "tokens.refresh_timeout"),
    ],
)
def test_a_problem_names_the_key_and_never_repeats_a_value_from_the_environment(env: dict[str, str], key: str) -> None:
    """An override's value may be a secret set in the wrong variable: the problem says which key and what it
    expects, never what the variable holds."""
    found = problems(env)
    assert any(p.startswith(f"{key} (from BFF_") for p in found), found
    for problem in found:
        assert LEAKED not in problem
        assert LEAKED_NUMBER not in problem


def test_a_value_the_file_reads_from_the_environment_is_never_repeated() -> None:
    doc = base_document()
    doc["session"]["idle_timeout"] = "${IDLE}"
    doc["routes"][0]["upstream"] = "${UPSTREAM}"
    found = problems({"IDLE": LEAKED, "UPSTREAM": f"https://user:{LEAKED}@orders.example.net"}, doc)
    assert [p.partition(":")[0] for p in found] == ["session.idle_timeout", "routes[0].upstream"]
    assert not [p for p in found if LEAKED in p]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("BFF_ROUTES__0__STRIP_PREFIX", "yes", "routes[0].strip_prefix (from BFF_ROUTES__0__STRIP_PREFIX): expected"),
        ("BFF_SERVER__TRUSTED_PROXIES", "10.0.0.0/8", "server.trusted_proxies (from BFF_SERVER__TRUSTED_PROXIES): "),
        ("BFF_SERVER__TRUSTED_PROXIES", '["nope"]', "server.trusted_proxies[0] (from BFF_SERVER__TRUSTED_PROXIES): "),
        ("BFF_SERVER__HEADER_TIMEOUT", "soon", "server.header_timeout (from BFF_SERVER__HEADER_TIMEOUT): expected a"),
        ("BFF_ROUTES__0__SET_HEADERS", "X-A: b", "routes[0].set_headers (from BFF_ROUTES__0__SET_HEADERS): expected"),
    ],
)
def test_malformed_typed_values_are_reported(name: str, value: str, expected: str) -> None:
    found = problems({name: value})
    assert len(found) == 1
    assert found[0].startswith(expected), found


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("BFF_SESSION__STROE", "did you mean BFF_SESSION__STORE?"),
        ("BFF_SESION__STORE", "did you mean BFF_SESSION__STORE?"),
        ("BFF_ROUTES__0__UPSTREEM", "did you mean BFF_ROUTES__0__UPSTREAM?"),
        ("BFF_SESSION_STORE", "did you mean BFF_SESSION__STORE?"),  # one underscore: looks like an override
        ("BFF_SESSION__STORE__X", "BFF_SESSION__STORE__X: "),
        ("BFF_ROUTES__first__PATH", "BFF_ROUTES__first__PATH: "),
        ("BFF_SESSION", "BFF_SESSION: "),
    ],
)
def test_unknown_override_names_are_errors_with_a_suggestion(name: str, expected: str) -> None:
    found = problems({name: "redis://127.0.0.1"})
    assert len(found) == 1, found
    assert found[0].startswith(name + ": "), found
    assert expected in found[0]


def test_unrelated_bff_variables_are_left_alone() -> None:
    env = {
        "BFF_CONFIG": "/etc/bff.toml",
        "BFF_TEST_REDIS_URL": "redis://127.0.0.1:1",
        "BFF_CLIENT_SECRET": CLIENT_SECRET,
        "BFF_SESSION_KEY": SESSION_KEY,
        "BFF_ORIGIN": "x",
        "BFF_FAULTS_PYTHON": "python",
        "NOT_BFF__SESSION__STORE": "x",
    }
    doc = base_document()
    doc["session"]["keys"] = ["${BFF_SESSION_KEY}"]
    config = parse_config(doc, env=env)
    assert config.session.store == "memory://"


def test_a_single_underscore_name_used_by_the_file_is_not_an_override() -> None:
    doc = base_document()
    doc["session"]["store"] = "${BFF_SESSION_STORE}"
    config = parse_config(doc, env={"BFF_SESSION_STORE": "redis://127.0.0.1:6390"})
    assert config.session.store == "redis://127.0.0.1:6390"


def test_a_route_added_by_the_environment_takes_the_next_index() -> None:
    config = parse_config(
        base_document(),
        env={"BFF_ROUTES__1__PATH": "/api/users", "BFF_ROUTES__1__UPSTREAM": "https://users.example.net"},
    )
    assert [(r.path, r.upstream) for r in config.routes] == [
        ("/api/orders", "https://orders.example.net/v1"),
        ("/api/users", "https://users.example.net"),
    ]
    assert problems({"BFF_ROUTES__1__UPSTREAM": "https://users.example.net"}) == ["routes[1].path: is required"]


def test_a_route_past_the_next_index_is_an_error() -> None:
    found = problems({"BFF_ROUTES__3__PATH": "/api/x", "BFF_ROUTES__3__UPSTREAM": "https://x.example.net"})
    assert found == [
        "BFF_ROUTES__3__PATH: routes[3] does not exist and routes[1] is not set: the file has 1 route(s); a route "
        "added by the environment takes the next index",
        "BFF_ROUTES__3__UPSTREAM: routes[3] does not exist and routes[1] is not set: the file has 1 route(s); a "
        "route added by the environment takes the next index",
    ]


def test_sections_absent_from_the_file_can_come_from_the_environment() -> None:
    doc = base_document()
    del doc["session"]
    config = parse_config(doc, env={"BFF_SESSION__KEYS": f'["{SESSION_KEY}"]', "BFF_LOGGING__FORMAT": "json"})
    assert config.session.keys == (Secret(SESSION_KEY),)
    assert config.logging.format == "json"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BFF_SESSION__KEYS", '["short-secret-value-1234"]'),
        ("BFF_SESSION__KEYS", "not-a-list-secret-value-1234"),
        ("BFF_SESSION__KEYS", '["dup-secret-value-1234-0123456789", "dup-secret-value-1234-0123456789"]'),
        ("BFF_ROUTES__0__SET_HEADERS", '{ "Authorization" = "Bearer secret-value-1234" }'),
        ("BFF_ROUTES__0__UPSTREAM", "https://user:secret-value-1234@[::1"),
        ("BFF_SESSION__STORE", "redis://:hunter2-secret-value-1234@[::1"),
    ],
)
def test_an_override_value_is_never_printed(name: str, value: str) -> None:
    found = problems({name: value})
    assert found
    assert not any("secret-value-1234" in p for p in found), found


def test_cli_check_applies_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BFF_SESSION__STORE", "postgres://x")
    assert main(["check", "--config", "config/development.toml"]) == 2
    assert "session.store (from BFF_SESSION__STORE): expected memory://" in capsys.readouterr().err


EXPLAINED = f"""
[server]
listen = "127.0.0.1:8001"
public_origin = "https://app.example.com"

[session]
store = "redis://:store-password-1234@127.0.0.1:6379/0?password=query-password-1234"
keys = ["{SESSION_KEY}"]

[oidc]
issuer = "https://idp.example.com"
client_id = "spa-bff"
client_secret = "${{TEST_CLIENT_SECRET}}"

[[routes]]
path = "/api/orders"
upstream = "https://orders.example.net/v1"
set_headers = {{ "X-Api-Key" = "route-api-key-1234" }}
proxy = "http://egress:proxy-pass-1234@egress.internal:3128"
"""


def test_cli_check_explain_shows_every_setting_with_its_origin_and_masks_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bff.toml"
    path.write_text(EXPLAINED)
    monkeypatch.setenv("TEST_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("BFF_ROUTES__0__TIMEOUT", "45s")
    monkeypatch.setenv("BFF_SESSION__IDLE_TIMEOUT", "20m")
    assert main(["check", "--config", str(path), "--explain"]) == 0
    out = capsys.readouterr().out
    lines = {line.split(" = ", 1)[0]: line for line in out.splitlines()}
    assert lines["server.listen"].endswith(f"# file {path}:3")
    assert '"127.0.0.1:8001"' in lines["server.listen"]
    assert lines["session.idle_timeout"].split("#")[0].strip().endswith('"20m"')
    assert lines["session.idle_timeout"].endswith("# env BFF_SESSION__IDLE_TIMEOUT")
    assert lines["routes[0].timeout"].endswith("# env BFF_ROUTES__0__TIMEOUT")
    assert lines["routes[0].upstream"].endswith(f"# file {path}:17")
    assert lines["oidc.client_secret"].endswith(f"# file {path}:13")
    assert lines["tokens.refresh_leeway"].endswith("# default")
    assert lines["logging.format"].endswith("# default")
    # Every field of every section is shown, listen once for host and port.
    assert len([k for k in lines if k.startswith("server.")]) == len(dataclasses.fields(ServerSettings)) - 1
    assert "redis://:********@127.0.0.1:6379/0?password=********" in lines["session.store"]
    assert '"http://egress:********@egress.internal:3128"' in lines["routes[0].proxy"]
    secrets = (SESSION_KEY, CLIENT_SECRET, "store-password-1234", "query-password-1234", "route-api-key-1234")
    for secret in (*secrets, "proxy-pass-1234"):
        assert secret not in out


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://user:proxy-secret-1234@proxy.example:3128", "routes[0].proxy: expected an http:// proxy URL"),
        ("socks5://proxy.example:1080", "routes[0].proxy: expected an http:// proxy URL"),
        ("proxy.example:3128", "routes[0].proxy: expected an http:// proxy URL"),
        ("http://user:proxy-secret-1234@[::1", "routes[0].proxy: expected an http:// proxy URL"),
        ("http://proxy.example:99999", "routes[0].proxy: expected an http:// proxy URL"),
        ("http://user:proxy-secret-1234@proxy.example:3128/path", "routes[0].proxy: must be the proxy's origin"),
        ("http://proxy.example:3128?x=proxy-secret-1234", "routes[0].proxy: must be the proxy's origin"),
    ],
)
def test_a_route_proxy_must_be_an_http_proxy_origin_and_is_never_echoed(value: str, expected: str) -> None:
    doc = base_document()
    doc["routes"][0]["proxy"] = value
    found = problems({}, doc)
    assert len(found) == 1
    assert found[0].startswith(expected), found
    assert "proxy-secret-1234" not in found[0]
    assert "proxy.example" not in found[0]


def test_a_route_proxy_is_read_and_empty_means_direct() -> None:
    doc = base_document()
    assert parse_config(doc, env={}).routes[0].proxy is None  # left out: the environment decides
    doc["routes"][0]["proxy"] = "http://user:pw@proxy.example:3128"
    assert parse_config(doc, env={}).routes[0].proxy == "http://user:pw@proxy.example:3128"
    assert parse_config(doc, env={"BFF_ROUTES__0__PROXY": ""}).routes[0].proxy == ""


def test_cli_check_refuses_an_unusable_https_proxy(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(name, value)
    assert main(["check", "--config", "config/production.toml"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("HTTPS_PROXY", "socks5://user:proxy-secret-1234@proxy.example:1080")
    assert main(["check", "--config", "config/production.toml"]) == 2
    err = capsys.readouterr().err
    assert "HTTPS_PROXY (environment, used for https upstreams): must be an http:// proxy URL" in err
    assert "proxy-secret-1234" not in err


def test_a_route_exchange_is_an_inline_table_in_the_environment_and_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = parse_config(
        base_document(), env={"BFF_ROUTES__0__EXCHANGE": '{ audience = "orders-api", scope = "orders:read" }'}
    )
    assert config.routes[0].exchange == ExchangeSettings(audience="orders-api", scope="orders:read")
    assert problems({"BFF_ROUTES__0__EXCHANGE": '{ audience = "orders api" }'}) == [
        "routes[0].exchange.audience (from BFF_ROUTES__0__EXCHANGE): must be 1 to 256 printable ASCII characters"
        " without spaces"
    ]
    path = tmp_path / "bff.toml"
    path.write_text(EXPLAINED)
    monkeypatch.setenv("TEST_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("BFF_ROUTES__0__EXCHANGE", '{ audience = "orders-api" }')
    assert main(["check", "--config", str(path), "--explain"]) == 0
    lines = {line.split(" = ", 1)[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["routes[0].exchange"].startswith('routes[0].exchange = { "audience" = "orders-api" }')
    assert lines["routes[0].exchange"].endswith("# env BFF_ROUTES__0__EXCHANGE")
