"""``[server] listen`` and ``bff serve --listen``: what each spelling binds, and a clear refusal for every bad one;
``drain_delay`` and ``shutdown_timeout``: defaults, bounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from bff.cli import main
from bff.config import parse_config
from bff.config.server import parse_listen
from bff.errors import ConfigError
from tests.support.configs import CLIENT_SECRET, SESSION_KEY, base_document


@pytest.mark.parametrize(
    ("listen", "bound"),
    [
        (":8000", ("0.0.0.0", 8000)),  # Go and oauth2-proxy: an empty host is every interface
        ("0.0.0.0:8000", ("0.0.0.0", 8000)),
        ("[::]:8000", ("::", 8000)),
        ("127.0.0.1:9000", ("127.0.0.1", 9000)),
        ("[::1]:8443", ("::1", 8443)),
        ("localhost:8000", ("localhost", 8000)),
        ("bff.internal:80", ("bff.internal", 80)),
        (" 10.1.2.3:65535 ", ("10.1.2.3", 65535)),
    ],
)
def test_listen_spellings_bind_what_they_say(listen: str, bound: tuple[str, int]) -> None:
    assert parse_listen(listen) == bound
    doc = base_document()
    doc["server"]["listen"] = listen
    server = parse_config(doc, env={}).server
    assert (server.host, server.port) == bound


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("8000", "expected host:port"),
        ("", "expected host:port"),
        ("localhost", "expected host:port"),
        ("localhost:", "port: expected a number from 1 to 65535"),
        ("localhost:0", "port: expected a number from 1 to 65535"),
        ("localhost:65536", "port: expected a number from 1 to 65535"),
        ("localhost:http", "port: expected a number from 1 to 65535"),
        ("localhost:+80", "port: expected a number from 1 to 65535"),
        ("::1:8000", "write an IPv6 address in brackets"),
        ("[::1:8000", "write an IPv6 address in brackets"),
        ("[10.0.0.1]:8000", "brackets are for IPv6 addresses"),
        ("[fe80::1%eth0]:8000", "brackets are for IPv6 addresses"),
        ("bad host:8000", "not an IP address or host name"),
        ("-x.example:8000", "not an IP address or host name"),
        ("http://0.0.0.0:8000", "expected host:port without a scheme"),
        ("999.1.1.1:8000", "not an IP address or host name"),
    ],
)
def test_bad_listen_values_are_refused_with_what_is_wrong(listen: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_listen(listen)
    doc = base_document()
    doc["server"]["listen"] = listen
    with pytest.raises(ConfigError) as raised:
        parse_config(doc, env={})
    assert any(p.startswith("server.listen: ") and message in p for p in raised.value.problems), raised.value.problems


def test_drain_delay_and_shutdown_timeout_have_defaults_and_are_read() -> None:
    server = parse_config(base_document(), env={}).server
    assert (server.drain_delay, server.shutdown_timeout) == (5.0, 25.0)
    doc = base_document()
    doc["server"].update(drain_delay="0s", shutdown_timeout="2m")
    server = parse_config(doc, env={}).server
    assert (server.drain_delay, server.shutdown_timeout) == (0.0, 120.0)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("drain_delay", "-1s", "server.drain_delay: expected a duration"),
        ("drain_delay", "10m", "server.drain_delay: must be at least 0 and at most 5m"),
        ("drain_delay", "soon", "server.drain_delay: expected a duration"),
        ("shutdown_timeout", "0s", "server.shutdown_timeout: must be more than 0 and at most 1h"),
        ("shutdown_timeout", "2h", "server.shutdown_timeout: must be more than 0 and at most 1h"),
        ("shutdown_timeout", True, "server.shutdown_timeout: expected a duration"),
    ],
)
def test_drain_settings_are_validated(key: str, value: object, expected: str) -> None:
    doc = base_document()
    doc["server"][key] = value
    with pytest.raises(ConfigError) as raised:
        parse_config(doc, env={})
    assert any(p.startswith(expected) for p in raised.value.problems), raised.value.problems


def test_check_shows_what_will_be_bound_and_listen_overrides_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bff.toml"
    path.write_text(
        '[server]\nlisten = ":8000"\npublic_origin = "https://app.example.com"\n'
        f'[session]\nkeys = ["{SESSION_KEY}"]\n'
        '[oidc]\nissuer = "https://idp.example.com"\nclient_id = "spa-bff"\n'
        f'client_secret = "{CLIENT_SECRET}"\n'
    )
    assert main(["check", "--config", str(path)]) == 0
    assert "listen 0.0.0.0:8000 (all IPv4 interfaces)" in capsys.readouterr().out
    assert main(["check", "--config", str(path), "--listen", "[::1]:9000"]) == 0
    assert "listen [::1]:9000" in capsys.readouterr().out
    assert main(["check", "--config", str(path), "--listen", "9000"]) == 2
    assert "--listen: expected host:port" in capsys.readouterr().err
