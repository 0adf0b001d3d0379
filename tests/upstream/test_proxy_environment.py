"""The upstream proxy chosen from ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``/``NO_PROXY`` is the one httpx picks for
the IdP calls: each case is asked of httpx itself (a client built with ``trust_env``) and of bff."""

from __future__ import annotations

import os

import httpx
import pytest

from bff.errors import ConfigError
from bff.upstream.proxy import ForwardProxy, parse_proxy_url, proxy_from_environment

P1, P2, P3 = "http://p1.example:3128", "http://p2.example:8080", "http://p3.example:9000"

CASES: list[tuple[dict[str, str], str]] = [
    ({}, "https://api.example.com"),
    ({"HTTPS_PROXY": P1}, "https://api.example.com"),
    ({"HTTPS_PROXY": P1}, "http://api.example.com"),
    ({"HTTP_PROXY": P2}, "http://api.example.com:8080/x"),
    ({"HTTP_PROXY": P2, "HTTPS_PROXY": P1}, "https://api.example.com"),
    ({"ALL_PROXY": P3}, "https://api.example.com"),
    ({"ALL_PROXY": P3, "HTTPS_PROXY": P1}, "https://api.example.com"),
    ({"ALL_PROXY": P3, "HTTPS_PROXY": P1}, "http://api.example.com"),
    ({"https_proxy": P1, "HTTPS_PROXY": P2}, "https://api.example.com"),
    ({"HTTPS_PROXY": "p1.example:3128"}, "https://api.example.com"),
    ({"HTTPS_PROXY": P1, "NO_PROXY": "*"}, "https://api.example.com"),
    ({"HTTPS_PROXY": P1, "NO_PROXY": "a.example, *"}, "https://api.example.com"),
    ({"HTTPS_PROXY": P1, "NO_PROXY": "example.com"}, "https://api.example.com"),
    ({"HTTPS_PROXY": P1, "NO_PROXY": "example.com"}, "https://example.com"),
    ({"HTTPS_PROXY": P1, "NO_PROXY": "example.com"}, "https://badexample.com"),
    ({"HTTPS_PROXY": P1, "NO_PROXY": ".example.com"}, "https://example.com"),
    ({"HTTPS_PROXY": P1, "NO_PROXY": ".example.com"}, "https://api.example.com"),
    ({"HTTPS_PROXY": P1, "NO_PROXY": "API.Example.com"}, "https://api.example.com"),
    ({"HTTPS_PROXY": P1, "NO_PROXY": "api.example.com:8443"}, "https://api.example.com:8443"),
    ({"HTTPS_PROXY": P1, "NO_PROXY": "api.example.com:8443"}, "https://api.example.com"),
    ({"HTTPS_PROXY": P1, "NO_PROXY": "10.1.2.3"}, "https://10.1.2.3"),
    ({"HTTPS_PROXY": P1, "NO_PROXY": "10.1.2.3"}, "https://10.1.2.33"),
    ({"HTTPS_PROXY": P1, "NO_PROXY": "10.0.0.0/8"}, "https://10.1.2.3"),
    ({"HTTPS_PROXY": P1, "NO_PROXY": "::1"}, "https://[::1]:8443"),
    ({"HTTPS_PROXY": P1, "NO_PROXY": "localhost"}, "https://localhost"),
    ({"HTTPS_PROXY": P1, "NO_PROXY": "localhost"}, "https://api.localhost"),
    ({"HTTPS_PROXY": P1, "NO_PROXY": "http://api.example.com"}, "https://api.example.com"),
    ({"HTTPS_PROXY": P1, "HTTP_PROXY": P2, "NO_PROXY": "http://api.example.com"}, "http://api.example.com"),
    ({"HTTPS_PROXY": P1, "NO_PROXY": " , api.example.com ,"}, "https://api.example.com"),
    ({"HTTPS_PROXY": "http://user:pa%40ss@p1.example:3128"}, "https://api.example.com"),
]


def httpx_choice(url: str) -> tuple[str, int] | None:
    with httpx.Client(trust_env=True) as client:
        transport = client._transport_for_url(httpx.URL(url))
        if transport is client._transport:
            return None
        proxy_url = transport._pool._proxy_url  # type: ignore[attr-defined]
        return proxy_url.host.decode(), proxy_url.port


@pytest.mark.parametrize(("environ", "url"), CASES)
def test_the_environment_picks_the_proxy_httpx_picks(
    environ: dict[str, str], url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.lower().endswith("_proxy") or name == "REQUEST_METHOD":
            monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    ours = proxy_from_environment(url, environ)
    assert (None if ours is None else (ours.host, ours.port)) == httpx_choice(url)


def test_httpoxy_http_proxy_is_ignored_under_cgi() -> None:
    assert proxy_from_environment("http://api.example.com", {"HTTP_PROXY": P2, "REQUEST_METHOD": "GET"}) is None
    assert proxy_from_environment("http://api.example.com", {"http_proxy": P2, "REQUEST_METHOD": "GET"}) is not None


def test_credentials_become_proxy_authorization_and_never_show() -> None:
    proxy = parse_proxy_url("http://user:pa%40ss@p1.example:3128")
    assert proxy == ForwardProxy("p1.example", 3128, "Basic dXNlcjpwYUBzcw==")  # user:pa@ss
    assert "dXNlcjpwYUBzcw" not in repr(proxy)


@pytest.mark.parametrize("value", ["https://user:secret-4711@p1.example", "socks5://p1.example:1080", "http://[::1"])
def test_an_unusable_environment_proxy_is_a_config_error_without_its_value(value: str) -> None:
    with pytest.raises(ConfigError) as refused:
        proxy_from_environment("https://api.example.com", {"HTTPS_PROXY": value})
    assert refused.value.problems[0].startswith("HTTPS_PROXY (environment, used for https upstreams): ")
    assert "secret-4711" not in str(refused.value.problems)
    assert "p1.example" not in str(refused.value.problems)
