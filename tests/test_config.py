from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest

from bff.cli import main
from bff.config import ExchangeSettings, Secret, load_config, parse_config, parse_duration, parse_size
from bff.errors import ConfigError
from tests.support.configs import SESSION_KEY, base_document, make_config

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
EXAMPLE_ENV = {
    "BFF_SESSION_KEY": SESSION_KEY,
    "BFF_CLIENT_SECRET": "example-client-secret",
    "REDIS_PASSWORD": "example-redis-password",
}


def problems(doc: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(doc, env=env or {})
    return info.value.problems


def test_base_document_is_valid() -> None:
    config = parse_config(base_document(), env={})
    assert config.server.public_origin == "https://app.example.com"
    assert config.oidc.redirect_uri == "https://app.example.com/bff/callback"
    assert config.session.cookie_name == "__Host-bff"
    assert config.session.same_site == "strict"
    assert config.routes[0].path == "/api/orders"


def test_server_edge_limits_have_safe_defaults_and_are_read() -> None:
    server = parse_config(base_document(), env={}).server
    assert (server.max_connections, server.header_timeout, server.keep_alive_timeout) == (4096, 10.0, 5.0)
    assert (server.max_request_header_size, server.max_request_headers, server.body_timeout) == (64 * 1024, 100, 30.0)
    doc = base_document()
    doc["server"].update(
        max_connections=100,
        header_timeout="2s",
        keep_alive_timeout="75s",
        body_timeout="1m",
        max_request_header_size="16KiB",
        max_request_headers=50,
    )
    server = parse_config(doc, env={}).server
    assert (server.max_connections, server.header_timeout, server.keep_alive_timeout) == (100, 2.0, 75.0)
    assert (server.max_request_header_size, server.max_request_headers, server.body_timeout) == (16 * 1024, 50, 60.0)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("max_connections", 0, "server.max_connections: must be between 1 and 1000000"),
        ("max_connections", "many", "server.max_connections: expected int, got str"),
        ("header_timeout", "0s", "server.header_timeout: must be more than 0 and at most 5m"),
        ("header_timeout", "1h", "server.header_timeout: must be more than 0 and at most 5m"),
        ("header_timeout", "soon", "server.header_timeout: expected a duration"),
        ("keep_alive_timeout", 0, "server.keep_alive_timeout: must be more than 0 and at most 1h"),
        ("body_timeout", "2h", "server.body_timeout: must be more than 0 and at most 1h"),
        ("max_request_header_size", "512B", "server.max_request_header_size: must be between 1KiB and 1MiB"),
        ("max_request_header_size", "2MiB", "server.max_request_header_size: must be between 1KiB and 1MiB"),
        ("max_request_header_size", "big", "server.max_request_header_size: expected a size"),
        ("max_request_headers", 0, "server.max_request_headers: must be between 1 and 10000"),
        ("max_request_headers", True, "server.max_request_headers: expected int, got bool"),
    ],
)
def test_server_edge_limits_are_validated(key: str, value: object, expected: str) -> None:
    doc = base_document()
    doc["server"][key] = value
    found = problems(doc)
    assert any(p.startswith(expected) for p in found), found


@pytest.mark.parametrize("path", sorted(p.name for p in CONFIG_DIR.glob("*.toml")))
def test_every_example_config_loads(path: str) -> None:
    config = load_config(CONFIG_DIR / path, env=EXAMPLE_ENV)
    assert config.session.keys == (Secret(SESSION_KEY),)


def test_examples_exist() -> None:
    assert {"production.toml", "development.toml"} <= {p.name for p in CONFIG_DIR.glob("*.toml")}


def test_env_references_are_expanded_and_missing_ones_reported() -> None:
    doc = base_document()
    doc["oidc"]["client_secret"] = "${SECRET_A}"
    doc["session"]["keys"] = ["${KEY_A}"]
    assert problems(doc) == [
        "session.keys[0]: environment variable ${KEY_A} is not set",
        "oidc.client_secret: environment variable ${SECRET_A} is not set",
    ]
    config = parse_config(doc, env={"SECRET_A": "s3cr3t", "KEY_A": SESSION_KEY})
    assert config.oidc.client_secret == Secret("s3cr3t")


def test_secrets_do_not_show_in_repr() -> None:
    config = parse_config(base_document(), env={})
    assert SESSION_KEY not in repr(config)
    assert "test-client-secret" not in repr(config)


def test_every_problem_is_reported_at_once_with_its_key_path() -> None:
    doc = base_document()
    doc["server"]["public_origin"] = "http://app.example.com"
    doc["session"]["keys"] = ["short"]
    doc["session"]["same_site"] = "none"
    doc["session"]["idle_timout"] = "5m"
    doc["routes"].append({"path": "/api/orders/", "upstream": "ftp://x"})
    doc["routes"].append({"path": "/api/x", "upstream": "https://*.example.net", "token": "admin"})
    found = problems(doc)
    assert found == [
        "server.public_origin: must use https (plain http is allowed only for localhost/127.0.0.1)",
        "session.same_site: SameSite=None is refused: it sends the session cookie on cross-site requests (CSRF)",
        "session.keys[0]: is too short (5 characters); use at least 32 random characters",
        "session.idle_timout: unknown key (did you mean `idle_timeout`? see config/ for every supported key)",
        "routes[1].path: duplicates routes[0].path",
        "routes[1].upstream: must be an absolute http(s) URL",
        "routes[2].upstream: must not contain a wildcard",
        "routes[2].token: expected one of user, client, user_or_none, none",
    ]


def test_cli_check_exits_2_and_prints_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[server]\npublic_origin = "http://evil.example"\n[session]\nkeys = []\n[oidc]\nissuer = "x"\n')
    assert main(["check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "server.public_origin: must use https" in err
    assert "session.keys: must hold at least one key" in err
    assert "oidc.client_id: is required" in err
    assert "oidc.issuer: must be an absolute http(s) URL" in err


def test_cli_check_ok(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in EXAMPLE_ENV.items():
        monkeypatch.setenv(k, v)
    assert main(["check", "--config", str(CONFIG_DIR / "production.toml")]) == 0
    assert "OK (4 route(s)" in capsys.readouterr().out


def test_cli_check_reads_bff_config(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("BFF_CONFIG", raising=False)
    assert main(["check"]) == 2
    assert "pass --config PATH or set BFF_CONFIG" in capsys.readouterr().err
    monkeypatch.setenv("BFF_CONFIG", "/nonexistent/bff.toml")
    assert main(["check"]) == 2
    assert "cannot read the file" in capsys.readouterr().err


def test_not_toml(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("server", "public_origin", "https://app.example.com/path", "must be an origin"),
        ("server", "public_origin", "https://user:pw@app.example.com", "must not carry credentials"),
        ("server", "listen", "8000", "expected host:port"),
        ("server", "trusted_proxies", ["10.0.0.0/33"], "expected a CIDR"),
        ("session", "store", "mysql://x", "expected memory://"),
        ("session", "cookie_name", "bff", "must start with __Host-"),
        ("session", "same_site", "None", "SameSite=None is refused"),
        ("session", "keys", [], "must hold at least one key"),
        ("session", "keys", [""], "is too short (0 characters)"),
        ("session", "keys", [SESSION_KEY, SESSION_KEY], "contains the same key twice"),
        ("session", "idle_timeout", "soon", "expected a duration"),
        ("session", "idle_timeout", "13h", "must not exceed absolute_timeout"),
        ("session", "max_pending_logins", 0, "session.max_pending_logins: must be between 1 and 20"),
        ("session", "max_pending_logins", 21, "session.max_pending_logins: must be between 1 and 20"),
        ("session", "max_pending_logins", "5", "session.max_pending_logins: expected int"),
        ("session", "login_timeout", "0s", "session.login_timeout: must be positive"),
        ("session", "write_format", 3, "session.write_format: must be 1 or 2 (the store formats this release writes"),
        ("session", "write_format", 0, "session.write_format: must be 1 or 2"),
        ("session", "write_format", "2", "session.write_format: expected int"),
        ("session", "write_format", True, "session.write_format: expected int"),
        ("session", "store_replicas", -1, "session.store_replicas: must be between 0 and 16"),
        ("session", "store_replicas", 17, "session.store_replicas: must be between 0 and 16"),
        ("session", "store_replicas", "1", "session.store_replicas: expected int"),
        ("oidc", "issuer", "http://idp.example.com", "must use https"),
        ("oidc", "token_endpoint_auth_method", "client_secret_jwt", "expected one of"),
        ("oidc", "token_endpoint_auth_method", "private_key_jwt", "private_key_file: is required"),
        ("oidc", "id_token_signing_algs", ["HS256"], "id_token_signing_algs[0]: is refused"),
        ("oidc", "id_token_signing_algs", ["none"], "id_token_signing_algs[0]: is refused"),
        ("oidc", "scopes", ["profile"], "must include 'openid'"),
        ("oidc", "redirect_uri", "https://evil.example/bff/callback", "must be on public_origin"),
        ("oidc", "post_logout_redirect_uri", "https://evil.example/", "must be on public_origin"),
        ("oidc", "extra_auth_params", {"state": "x"}, "is set by bff and may not be overridden"),
        ("oidc", "clock_skew", "1h", "must not exceed 5m"),
        ("oidc", "timeout", "0s", "oidc.timeout: must be positive"),
        ("oidc", "client_secret", 42, "expected str, got int"),
        ("oidc", "trusted_audiences", "https://api.example.com", "expected a list of strings"),
        ("oidc", "trusted_audiences", [""], "trusted_audiences[0]: must not be empty"),
        ("oidc", "trusted_audiences", ["spa-bff"], "trusted_audiences[0]: is client_id"),
    ],
)
def test_unsafe_or_invalid_settings_are_refused(section: str, key: str, value: Any, expected: str) -> None:
    doc = base_document()
    doc[section][key] = value
    found = problems(doc)
    assert any(expected in p for p in found), found


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ({"path": "/bff/x", "upstream": "https://a.example"}, "overlaps bff's own endpoints"),
        ({"path": "/healthz", "upstream": "https://a.example"}, "overlaps bff's own endpoints"),
        ({"path": "/", "upstream": "https://a.example"}, "must not be '/'"),
        ({"path": "api", "upstream": "https://a.example"}, "must be a plain absolute path prefix"),
        ({"path": "/api/../x", "upstream": "https://a.example"}, "must be a plain absolute path prefix"),
        ({"path": "/api/%2e", "upstream": "https://a.example"}, "must be a plain absolute path prefix"),
        ({"path": "/api//orders", "upstream": "https://a.example"}, "duplicates routes[0].path"),
        ({"path": "/x", "upstream": "http://orders.example.net"}, "must use https"),
        ({"path": "/x", "upstream": "https://a.example/?q=1"}, "must not contain a query string"),
        ({"path": "/x"}, "upstream: is required"),
        (
            {"path": "/x", "upstream": "https://a.example", "methods": ["FETCH"]},
            "methods[0]: expected one of GET, HEAD",
        ),
        ({"path": "/x", "upstream": "https://a.example", "max_body": "lots"}, "expected a size"),
        ({"path": "/x", "upstream": "https://a.example", "set_headers": {"Authorization": "x"}}, "managed by bff"),
        (
            {"path": "/x", "upstream": "https://a.example", "set_headers": {"bad name": "x"}},
            "set_headers: a header name is not a valid",
        ),
        ({"path": "/x", "upstream": "https://a.example", "strip_prefx": False}, "strip_prefx: unknown key"),
        (
            {"path": "/x", "upstream": "https://a.example", "token": "user", "anonymous": True},
            "routes[1].anonymous: applies only to token = 'client'",
        ),
        (
            {"path": "/x", "upstream": "https://a.example", "token": "none", "anonymous": False},
            "routes[1].anonymous: applies only to token = 'client'",
        ),
        ({"path": "/x", "upstream": "https://a.example", "token": "client", "anonymous": "yes"}, "routes[1].anonymous"),
        (
            {"path": "/x", "upstream": "https://a.example", "exchange": "orders-api"},
            "routes[1].exchange: expected a table",
        ),
        (
            {"path": "/x", "upstream": "https://a.example", "exchange": {}},
            "routes[1].exchange.audience: an exchange needs",
        ),
        (
            {"path": "/x", "upstream": "https://a.example", "exchange": {"scope": "orders:read"}},
            "routes[1].exchange.audience: an exchange needs an audience or a resource",
        ),
        (
            {"path": "/x", "upstream": "https://a.example", "exchange": {"audience": "orders api"}},
            "routes[1].exchange.audience: must be 1 to 256 printable ASCII characters",
        ),
        (
            {"path": "/x", "upstream": "https://a.example", "exchange": {"audience": "a", "scope": "a  b"}},
            "routes[1].exchange.scope: must be scope names separated by single spaces",
        ),
        (
            {"path": "/x", "upstream": "https://a.example", "exchange": {"audience": "a", "scope": 'say"hi"'}},
            "routes[1].exchange.scope: must be scope names",
        ),
        (
            {"path": "/x", "upstream": "https://a.example", "exchange": {"resource": "http://orders.example.net"}},
            "routes[1].exchange.resource: must use https",
        ),
        (
            {"path": "/x", "upstream": "https://a.example", "exchange": {"audience": "a", "audiences": ["b"]}},
            "routes[1].exchange.audiences: unknown key (did you mean `audience`?",
        ),
        (
            {"path": "/x", "upstream": "https://a.example", "token": "client", "exchange": {"audience": "a"}},
            "routes[1].exchange: applies only to token = 'user' or 'user_or_none'",
        ),
        (
            {"path": "/x", "upstream": "https://a.example", "token": "none", "exchange": {"audience": "a"}},
            "routes[1].exchange: applies only to token = 'user' or 'user_or_none'",
        ),
        (
            {"path": "/x", "upstream": "https://a.example", "scopes": ["x"], "exchange": {"audience": "a"}},
            "routes[1].exchange: cannot be combined with the route's resource or scopes",
        ),
    ],
)
def test_route_problems(route: dict[str, Any], expected: str) -> None:
    doc = base_document()
    doc["routes"].append(route)
    found = problems(doc)
    assert any(expected in p for p in found), found


def test_routes_must_be_an_array_of_tables_and_each_entry_is_reported_in_order() -> None:
    doc = base_document()
    doc["routes"] = [{"path": "/x"}, "x", {"path": "/y", "upstream": "https://a.example"}, 7]
    assert problems(doc) == [
        "routes[0].upstream: is required",
        "routes[1]: expected a table",
        "routes[3]: expected a table",
    ]
    doc["routes"] = {"path": "/x"}
    assert problems(doc) == ["routes: expected an array of tables ([[routes]])"]


def test_trusted_audiences_default_to_none_and_are_read() -> None:
    assert parse_config(base_document(), env={}).oidc.trusted_audiences == ()
    doc = base_document()
    doc["oidc"]["trusted_audiences"] = ["https://api.example.com", "${API_AUDIENCE}"]
    config = parse_config(doc, env={"API_AUDIENCE": "orders-api"})
    assert config.oidc.trusted_audiences == ("https://api.example.com", "orders-api")


def test_acr_values_allowed_default_to_any_and_refuse_unsafe_values() -> None:
    assert parse_config(base_document(), env={}).oidc.acr_values_allowed == ()
    doc = base_document()
    doc["oidc"]["acr_values_allowed"] = ["urn:example:mfa", "silver"]
    assert parse_config(doc, env={}).oidc.acr_values_allowed == ("urn:example:mfa", "silver")
    doc["oidc"]["acr_values_allowed"] = ["ok", "a b", "<x>", ""]
    assert problems(doc) == [
        "oidc.acr_values_allowed[1]: must be one value, not several separated by spaces",
        "oidc.acr_values_allowed[2]: must be one value of letters, digits and ':._~/-' (RFC 9470)",
        "oidc.acr_values_allowed[3]: must be one value of letters, digits and ':._~/-' (RFC 9470)",
    ]


def test_max_pending_logins_defaults_to_five() -> None:
    assert parse_config(base_document(), env={}).session.max_pending_logins == 5
    doc = base_document()
    doc["session"]["max_pending_logins"] = 8
    assert parse_config(doc, env={}).session.max_pending_logins == 8


def test_write_format_defaults_to_what_the_previous_release_reads() -> None:
    assert parse_config(base_document(), env={}).session.write_format == 1
    doc = base_document()
    doc["session"]["write_format"] = 2
    assert parse_config(doc, env={}).session.write_format == 2


def test_exchange_is_read_with_its_audience_resource_and_scope() -> None:
    doc = base_document()
    doc["routes"].append(
        {
            "path": "/api/billing",
            "upstream": "https://billing.example.net",
            "token": "user_or_none",
            "exchange": {"audience": "billing-api", "resource": "https://billing.example.net", "scope": "${SCOPE}"},
        }
    )
    orders, billing = parse_config(doc, env={"SCOPE": "billing:read billing:write"}).routes
    assert orders.exchange is None
    assert billing.exchange == ExchangeSettings(
        audience="billing-api", resource="https://billing.example.net", scope="billing:read billing:write"
    )


def test_client_routes_need_a_session_unless_they_say_anonymous() -> None:
    doc = base_document()
    doc["routes"] = [
        {"path": "/api/a", "upstream": "https://a.example", "token": "client"},
        {"path": "/api/b", "upstream": "https://b.example", "token": "client", "anonymous": True},
    ]
    assert [r.anonymous for r in parse_config(doc, env={}).routes] == [False, True]


def test_nested_prefixes_are_allowed_longest_wins_at_runtime() -> None:
    doc = base_document()
    doc["routes"].append({"path": "/api", "upstream": "https://api.example.net"})
    assert [r.path for r in parse_config(doc, env={}).routes] == ["/api/orders", "/api"]


def test_loopback_http_is_allowed_for_development() -> None:
    doc = base_document(public_origin="http://localhost:8000", issuer="http://127.0.0.1:9000")
    doc["routes"][0]["upstream"] = "http://127.0.0.1:9100"
    config = parse_config(doc, env={})
    assert config.server.public_origin == "http://localhost:8000"
    assert config.oidc.redirect_uri == "http://localhost:8000/bff/callback"


def test_unknown_sections_are_refused() -> None:
    doc = copy.deepcopy(base_document())
    doc["sessions"] = {}
    assert problems(doc) == ["sessions: unknown key (did you mean `session`? see config/ for every supported key)"]


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("15m", 900), ("12h", 43200), ("1d", 86400), ("250ms", 0.25), (5, 5)]
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5 minutes", "-5s", -1, True, "1w"])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match=r"duration|negative"):
        parse_duration(bad)


@pytest.mark.parametrize(("text", "size"), [("64KiB", 65536), ("10MiB", 10485760), (1000, 1000), ("1GB", 10**9)])
def test_sizes(text: str | int, size: int) -> None:
    assert parse_size(text) == size


def test_environment_is_read_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BFF_TEST_SECRET_X", "from-env")
    doc = base_document()
    doc["oidc"]["client_secret"] = "${BFF_TEST_SECRET_X}"
    assert parse_config(doc).oidc.client_secret == Secret("from-env")
    assert os.environ["BFF_TEST_SECRET_X"] == "from-env"


def test_refresh_timeout_defaults_to_a_minute_and_is_at_least_the_oidc_timeout() -> None:
    assert make_config().tokens.refresh_timeout == 60.0
    doc = base_document()
    doc["oidc"]["timeout"] = "2m"
    assert make_config(doc).tokens.refresh_timeout == 120.0  # never below the request's own deadline
    doc["tokens"] = {"refresh_timeout": "30s"}
    assert problems(doc) == ["tokens.refresh_timeout: must be at least oidc.timeout"]
    doc["oidc"]["timeout"] = "5s"
    assert make_config(doc).tokens.refresh_timeout == 30.0
    doc["tokens"] = {"refresh_timeout": "11m"}
    assert problems(doc) == [
        "tokens.refresh_timeout: must not exceed 10m (the session's refresh lock is held that long)"
    ]


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("9464", "metrics.listen: expected host:port (e.g. 0.0.0.0:9464)"),
        (":9464", "metrics.listen: expected host:port"),
        ("0.0.0.0:70000", "metrics.listen: expected host:port"),
        ("0.0.0.0:x", "metrics.listen: expected host:port"),
        ("127.0.0.1:8000", "metrics.listen: is the [server] listen address"),
        ("0.0.0.0:8000", "metrics.listen: is the [server] listen address"),
        (9464, "metrics.listen: expected str, got int"),
    ],
)
def test_metrics_listen_is_validated(listen: object, expected: str) -> None:
    doc = base_document()
    doc["metrics"] = {"listen": listen}
    found = problems(doc)
    assert any(p.startswith(expected) for p in found), found


def test_metrics_are_off_by_default_and_the_listener_is_read() -> None:
    assert parse_config(base_document(), env={}).metrics.address() is None
    doc = base_document()
    doc["metrics"] = {"listen": "[::1]:9464"}
    assert parse_config(doc, env={}).metrics.address() == ("::1", 9464)
    doc["metrics"] = {"listen": "0.0.0.0:9464"}
    assert parse_config(doc, env={}).metrics.address() == ("0.0.0.0", 9464)


def test_access_log_is_off_by_default_and_must_be_a_boolean() -> None:
    assert parse_config(base_document(), env={}).logging.access_log is False
    doc = base_document()
    doc["logging"] = {"access_log": True}
    assert parse_config(doc, env={}).logging.access_log is True
    doc["logging"] = {"access_log": "yes"}
    assert "logging.access_log: expected bool, got str" in problems(doc)


def test_store_replicas_default_to_none_and_need_a_replicated_redis() -> None:
    assert parse_config(base_document(), env={}).session.store_replicas == 0
    doc = base_document()
    doc["session"]["store"] = "redis+sentinel://s1:26379,s2:26379,s3:26379/bff"
    doc["session"]["store_replicas"] = 1
    assert parse_config(doc, env={}).session.store_replicas == 1
    for store, problem in [
        ("memory://", "needs a Redis store"),
        ("redis+cluster://n1:6379", "is not supported on Redis Cluster"),
    ]:
        doc["session"]["store"] = store
        with pytest.raises(ConfigError, match=f"session.store_replicas: {problem}"):
            parse_config(doc, env={})


@pytest.mark.parametrize(
    "store", ["rediss+sentinel://:pw@s1:26379,s2:26379/bff", "rediss+cluster://:pw@n1:6379,n2:6379", "unix:///r.sock"]
)
def test_every_store_url_the_redis_store_takes_is_accepted(store: str) -> None:
    doc = base_document()
    doc["session"]["store"] = store
    assert parse_config(doc, env={}).session.store == store


def test_cli_check_and_serve_refuse_an_unusable_dpop_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "dpop.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    path = tmp_path / "bff.toml"
    path.write_text(f"""
[server]
public_origin = "https://app.example.com"
[session]
keys = ["{SESSION_KEY}"]
[oidc]
issuer = "https://idp.example.com"
client_id = "spa-bff"
client_secret = "a-client-secret-0123456789"
dpop = true
dpop_key_file = "{key}"
""")
    for command in ("check", "serve"):
        assert main([command, "--config", str(path)]) == 2
        err = capsys.readouterr().err
        assert "oidc.dpop_key_file: is not a PEM EC private key" in err
        assert str(key) not in err
