"""Header hygiene as pure functions: the cases a loopback server cannot produce (peers, IPv6, malformed framing)."""

from __future__ import annotations

import ipaddress

import pytest

from bff.errors import BadRequest
from bff.proxy.headers import (
    REQUEST_DROP,
    ForwardingPolicy,
    IncomingHeaders,
    read_request_headers,
    request_drop_set,
    response_headers,
)

TRUSTED = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")]
CLIENT_CLAIMS = [(b"x-forwarded-for", b"203.0.113.9"), (b"forwarded", b"for=203.0.113.9"), (b"x-real-ip", b"1.2.3.4")]


def forwarded(policy: ForwardingPolicy, peer: str | None) -> list[tuple[str, str]]:
    """The fields ``policy`` adds for a request from ``peer`` (None: a Unix socket) that carries CLIENT_CLAIMS."""
    incoming = IncomingHeaders([], {}, None, False, list(CLIENT_CLAIMS))
    return policy.upstream_headers(incoming, None if peer is None else (peer, 50123), [])


def test_request_headers_split() -> None:
    incoming = read_request_headers(
        [
            (b"host", b"bff.test"),
            (b"connection", b"keep-alive, X-Secret"),
            (b"connection", b"x-other, X-Forwarded-Secret"),
            (b"x-secret", b"1"),
            (b"x-other", b"1"),
            (b"x-forwarded-secret", b"1"),
            (b"x-csrf", b"1"),
            (b"origin", b"http://bff.test"),
            (b"content-length", b"12"),
            (b"x-value", "caf\u00e9".encode()),
            (b"x-latin", b"\xe9"),
        ],
        REQUEST_DROP,
    )
    assert incoming.forward == [
        ("origin", "http://bff.test"),  # read by the CSRF guard and still the upstream's to see
        ("content-length", "12"),
        ("x-value", "caf\u00e9".encode().decode("latin-1")),  # octets, byte for byte: UTF-8 stays UTF-8
        ("x-latin", "\u00e9"),  # and a Latin-1 octet stays that octet
    ]
    assert incoming.guard == {"x-csrf": "1", "origin": "http://bff.test"}
    assert incoming.content_length == 12
    assert not incoming.chunked
    assert incoming.forwarding == []  # named in Connection: not even a trusted proxy's claim survives


@pytest.mark.parametrize("value", [b"12abc", b"-1", b"", b"1 2"])
def test_malformed_content_length_is_refused(value: bytes) -> None:
    with pytest.raises(BadRequest):
        read_request_headers([(b"content-length", value)], REQUEST_DROP)


def test_route_drop_set_is_case_insensitive() -> None:
    drop = request_drop_set(["X-Remove"], {"X-Set": "v"})
    assert {b"x-remove", b"x-set", b"cookie", b"authorization"} <= drop


def test_untrusted_peer_claims_are_replaced() -> None:
    policy = ForwardingPolicy("https://app.example", TRUSTED)
    assert forwarded(policy, "198.51.100.1") == [
        ("x-forwarded-for", "198.51.100.1"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "app.example"),
    ]


def test_no_trusted_proxies_configured() -> None:
    policy = ForwardingPolicy("https://app.example", [])
    assert forwarded(policy, "10.1.2.3")[0] == ("x-forwarded-for", "10.1.2.3")


def test_unix_socket_peer_reports_no_address() -> None:
    policy = ForwardingPolicy("https://app.example:8443", TRUSTED)
    assert forwarded(policy, None) == [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "app.example:8443"),
    ]
    assert not policy.is_trusted("/run/bff.sock")


def test_trusted_ipv6_peer_is_chained_and_quoted() -> None:
    policy = ForwardingPolicy("https://app.example", TRUSTED)
    headers = dict(forwarded(policy, "2001:db8::7"))
    assert headers["x-forwarded-for"] == "203.0.113.9, 2001:db8::7"
    assert headers["forwarded"] == 'for=203.0.113.9, for="[2001:db8::7]"'  # RFC 7239 6: IPv6 is quoted
    assert headers["x-real-ip"] == "1.2.3.4"
    assert headers["x-forwarded-proto"] == "https"


@pytest.mark.parametrize("peer", ["10.1.2.3", "198.51.100.1", None], ids=["trusted", "untrusted", "unix-socket"])
def test_the_browsers_fields_come_first_and_the_routes_set_headers_last(peer: str | None) -> None:
    policy = ForwardingPolicy("https://app.example", TRUSTED)
    incoming = IncomingHeaders([("accept", "*/*")], {}, None, False, list(CLIENT_CLAIMS))
    out = policy.upstream_headers(incoming, None if peer is None else (peer, 50123), [("x-route", "1")])
    assert out[0] == ("accept", "*/*")
    assert out[1:-1] == forwarded(policy, peer)
    assert out[-1] == ("x-route", "1")


def test_trust_verdicts_are_cached_and_bounded() -> None:
    policy = ForwardingPolicy("https://app.example", TRUSTED)
    for i in range(5000):
        policy.is_trusted(f"192.0.2.{i % 256}" if i < 256 else f"198.18.{i // 256}.{i % 256}")
    assert policy.is_trusted("10.9.9.9")
    assert not policy.is_trusted("11.0.0.1")
    assert len(policy._verdicts) <= 4097


def test_response_headers() -> None:
    raw = [
        (b"Content-Type", b"application/json"),
        (b"Connection", b"close, X-Internal"),
        (b"X-Internal", b"1"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Set-Cookie", b"a=1"),
        (b"Date", b"Mon, 01 Jan 2024 00:00:00 GMT"),
        (b"Server", b"internal/1.2.3"),
        (b"Vary", b"Accept"),
        (b"Vary", b"Origin"),
    ]
    assert response_headers(raw) == [
        (b"content-type", b"application/json"),
        (b"vary", b"Accept"),
        (b"vary", b"Origin"),
    ]


@pytest.mark.parametrize(
    "name",
    [b"x_forwarded_for", b"x-forwarded_host", b"x_real_ip", b"x_csrf", b"authorization_", b"_", b"x-custom_name"],
)
def test_request_header_names_with_an_underscore_never_reach_the_upstream(name: bytes) -> None:
    # CGI/WSGI servers map both "-" and "_" to "_": X_Forwarded_For would read as the X-Forwarded-For bff controls.
    incoming = read_request_headers([(name, b"203.0.113.66"), (b"x-kept", b"1")], REQUEST_DROP)
    assert incoming.forward == [("x-kept", "1")]
    assert incoming.forwarding == []
    assert incoming.guard == {}


@pytest.mark.parametrize(
    "name",
    [
        b"Connection",
        b"Keep-Alive",
        b"Proxy-Authenticate",
        b"Proxy-Authorization",
        b"Proxy-Authentication-Info",
        b"Proxy-Connection",
        b"TE",
        b"Trailer",
        b"Transfer-Encoding",
        b"Upgrade",
        b"X-Named-In-Connection",
    ],
)
def test_no_hop_by_hop_response_header_reaches_the_browser(name: bytes) -> None:
    raw = [
        (b"Connection", b"x-named-in-connection"),
        (name, b'Basic realm="upstream"'),
        (b"Content-Type", b"text/plain"),
    ]
    assert response_headers(raw) == [(b"content-type", b"text/plain")]
