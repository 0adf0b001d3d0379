"""The proxy between a real browser-side client and a real upstream: routing, header hygiene, bodies, failures."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from bff.config import RouteSettings
from bff.errors import BffError, ServiceUnavailable, Unauthenticated
from bff.proxy import Proxy
from bff.upstream import UpstreamClient
from tests.proxy.conftest import PUBLIC_ORIGIN, TOKEN, StubBearer, Upstream, raw_request, run_proxy
from tests.support.echo_upstream import GZIP_BODY, TRUNCATED

BINARY = bytes(range(256)) * 40 + os.urandom(4096) + b"\x00\r\n\r\n"


def upstream_headers(response: httpx.Response) -> dict[str, list[str]]:
    assert response.status_code == 200, response.text
    assert response.headers["x-upstream"] == "yes"
    seen: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        seen.setdefault(name, []).append(value)
    return seen


def assert_refused(response: httpx.Response, status: int, error: str, upstream: Upstream) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == error
    assert response.headers["x-bff-error"] == error  # the Proxy's error_headers hook
    assert upstream.state.seen == []


# --- routing --------------------------------------------------------------------------------------------------------


def test_bearer_token_arrives_and_prefix_is_stripped(client: httpx.Client, bearer: StubBearer) -> None:
    response = client.get("/api/echo/orders/1", params={"page": "2"})
    body = response.json()
    assert (body["method"], body["raw_path"], body["query_string"]) == ("GET", "/echo/orders/1", "page=2")
    assert upstream_headers(response)["authorization"] == [f"Bearer {TOKEN}"]
    assert bearer.calls == 1


@pytest.mark.parametrize(
    ("path", "upstream_path"),
    [
        ("/api/echo", "/echo"),
        ("/api/echo/", "/echo/"),
        ("/api/echo/deep/x", "/deeper/x"),  # the longest prefix wins
        ("/api/echo/deep", "/deeper"),
        ("/api/echo/deeper", "/echo/deeper"),  # "deep" matches whole segments only
        ("/api/raw/a/b", "/api/raw/a/b"),  # strip_prefix = false
        ("/api/echo/a..b/.c/d./~x", "/echo/a..b/.c/d./~x"),  # dots inside a segment are just characters
    ],
)
def test_routing(client: httpx.Client, path: str, upstream_path: str) -> None:
    assert client.get(path).json()["raw_path"] == upstream_path


@pytest.mark.parametrize("path", ["/api/echoX", "/api/ech", "/api", "/", "/other/api/echo", "/API/echo"])
def test_no_route_is_404(client: httpx.Client, upstream: Upstream, path: str) -> None:
    assert_refused(client.get(path), 404, "not_found", upstream)


def test_match_is_segment_bounded_longest_prefix() -> None:
    routes = [RouteSettings(path="/api", upstream="http://a"), RouteSettings(path="/api/orders/", upstream="http://b")]
    proxy = Proxy(routes, UpstreamClient(), StubBearer(), public_origin=PUBLIC_ORIGIN, trusted_proxies=())
    assert proxy.match("/api/orders/1") is routes[1]
    assert proxy.match("/api/orders") is routes[1]
    assert proxy.match("/api/ordersX") is routes[0]
    assert proxy.match("/apix") is None


def test_method_not_allowed(client: httpx.Client, upstream: Upstream) -> None:
    response = client.post("/api/readonly/x", content=b"{}")
    assert_refused(response, 405, "method_not_allowed", upstream)
    assert response.headers["allow"] == "GET, HEAD"
    assert client.get("/api/readonly/x").status_code == 200


@pytest.mark.parametrize("method", ["TRACE", "PROPFIND", "PURGE"])
def test_methods_outside_the_standard_set_are_refused(client: httpx.Client, upstream: Upstream, method: str) -> None:
    # TRACE would echo the request back, the bearer token bff added included.
    response = client.request(method, "/api/echo/x")
    assert_refused(response, 405, "method_not_allowed", upstream)
    assert response.headers["allow"] == "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"


def test_anonymous_route_sends_no_token(client: httpx.Client, bearer: StubBearer) -> None:
    headers = upstream_headers(client.get("/api/anon/x", headers={"Authorization": "Bearer from-browser"}))
    assert "authorization" not in headers
    assert bearer.calls == 1


# --- header hygiene -------------------------------------------------------------------------------------------------


def test_browser_credentials_and_forwarding_claims_do_not_arrive(client: httpx.Client, upstream: Upstream) -> None:
    response = client.get(
        "/api/echo/x",
        headers=[
            ("Cookie", "__Host-bff=session-secret; other=1"),
            ("Authorization", "Bearer forged-by-the-browser"),
            ("Proxy-Authorization", "Basic c2VjcmV0"),
            ("Proxy-Whatever", "1"),
            ("X-Forwarded-For", "203.0.113.66"),
            ("X-Forwarded-Host", "evil.example"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Port", "8443"),
            ("Forwarded", "for=203.0.113.66;host=evil.example"),
            ("X-Real-IP", "203.0.113.66"),
            ("Connection", "keep-alive, X-Hop-Secret"),
            ("X-Hop-Secret", "only for the next hop"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Upgrade", "h2c"),
            ("X-Custom", "kept"),
            ("Accept", "application/json"),
        ],
    )
    headers = upstream_headers(response)
    assert headers["authorization"] == [f"Bearer {TOKEN}"]
    assert headers["x-forwarded-for"] == ["127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["http"]
    assert headers["x-forwarded-host"] == ["bff.test"]
    assert headers["host"] == [urlsplit(upstream.url).netloc]
    assert headers["x-custom"] == ["kept"]
    assert headers["accept"] == ["application/json"]
    for gone in (
        "cookie",
        "x-csrf",
        "proxy-authorization",
        "proxy-whatever",
        "x-forwarded-port",
        "forwarded",
        "x-real-ip",
        "connection",
        "x-hop-secret",
        "keep-alive",
        "te",
        "upgrade",
    ):
        assert gone not in headers, gone


def test_trusted_proxy_claims_are_kept_and_chained(upstream: Upstream, bearer: StubBearer) -> None:
    routes = [RouteSettings(path="/api/echo", upstream=f"{upstream.url}/echo")]
    with (
        run_proxy(routes, bearer, trusted_proxies=[ipaddress.ip_network("127.0.0.0/8")]) as url,
        httpx.Client(base_url=url, headers={"X-CSRF": "1"}) as client,
    ):
        headers = upstream_headers(
            client.get(
                "/api/echo/x",
                headers=[
                    ("X-Forwarded-For", "203.0.113.7, 10.0.0.1"),
                    ("X-Forwarded-Proto", "https"),
                    ("X-Forwarded-Host", "app.example"),
                    ("Forwarded", "for=203.0.113.7;proto=https"),
                    ("X-Real-IP", "203.0.113.7"),
                    ("Cookie", "__Host-bff=session-secret"),
                    ("Authorization", "Bearer forged"),
                ],
            )
        )
    assert headers["x-forwarded-for"] == ["203.0.113.7, 10.0.0.1, 127.0.0.1"]
    assert headers["x-forwarded-proto"] == ["https"]
    assert headers["x-forwarded-host"] == ["app.example"]
    assert headers["forwarded"] == ["for=203.0.113.7;proto=https, for=127.0.0.1"]
    assert headers["x-real-ip"] == ["203.0.113.7"]
    assert headers["authorization"] == [f"Bearer {TOKEN}"]
    assert "cookie" not in headers


def test_route_sets_and_removes_headers(client: httpx.Client) -> None:
    headers = upstream_headers(client.get("/api/headers", headers={"X-Remove-Me": "1", "X-Client-Version": "evil"}))
    assert headers["x-api-key"] == ["route-key"]
    assert headers["x-client-version"] == ["from-route"]
    assert "x-remove-me" not in headers


def test_no_headers_are_invented(proxy_url: str) -> None:
    response = raw_request(proxy_url, b"/api/echo/x", method=b"POST", body=b"raw bytes")
    names = {name for name, _ in response_json_headers(response.body)}
    # HTTP clients like to add Accept, Accept-Encoding (then the upstream compresses), User-Agent and Content-Type.
    assert names.isdisjoint({"accept", "accept-encoding", "user-agent", "content-type"}), names


def response_json_headers(body: bytes) -> list[tuple[str, str]]:
    return [(k, v) for k, v in json.loads(body)["headers"]]


def test_upstream_cookies_and_hop_headers_do_not_reach_the_browser(client: httpx.Client) -> None:
    response = client.get("/api/up/cookie")
    assert response.status_code == 200
    for gone in ("set-cookie", "set-cookie2", "keep-alive", "x-hop-secret"):
        assert gone not in response.headers, gone
    assert "echo-upstream" not in response.headers.get("server", "")
    assert response.headers["cache-control"] == "private, max-age=60"
    assert response.headers["etag"] == '"v1"'
    assert response.headers["www-authenticate"] == 'Bearer realm="api"'
    assert response.headers["x-kept"] == "kept"
    assert response.json() == {"cookie": "set"}
    assert not client.cookies


def test_content_encoding_passes_through_untouched(client: httpx.Client) -> None:
    with client.stream("GET", "/api/up/gzip") as response:
        raw = b"".join(response.iter_raw())
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["content-length"] == str(len(GZIP_BODY))
    assert raw == GZIP_BODY


# --- bodies ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_methods_and_binary_bodies_arrive_byte_identical(client: httpx.Client, method: str) -> None:
    body = client.request(method, "/api/echo/x", content=BINARY).json()
    assert body["method"] == method
    assert (body["body_length"], body["body_sha256"]) == (len(BINARY), hashlib.sha256(BINARY).hexdigest())


def test_chunked_body_arrives_byte_identical(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield BINARY[:1000]
        yield BINARY[1000:]

    body = client.post("/api/echo/x", content=chunks()).json()
    assert (body["body_length"], body["body_sha256"]) == (len(BINARY), hashlib.sha256(BINARY).hexdigest())


def test_head(client: httpx.Client) -> None:
    response = client.head("/api/echo/x")
    assert response.status_code == 200
    assert int(response.headers["content-length"]) > 0
    assert response.content == b""


@pytest.mark.parametrize(
    "target",
    [
        b"/api/echo/a/b%20c/%C3%A9/x~y!$&'()*+,=:?q=%2F&q=a+b&empty=&%zz=1&x=%C3%A9",
        b"/api/echo/%40user/%3Fnot-a-query/%23not-a-fragment",
        b"/api/echo?",
        b"/api/echo/x?a=b?c=/../d",
    ],
)
def test_raw_path_and_query_arrive_byte_identical(proxy_url: str, target: bytes) -> None:
    response = raw_request(proxy_url, target)
    assert response.status == 200, response.body
    path, _, query = target.removeprefix(b"/api").partition(b"?")
    echoed = json.loads(response.body)
    assert (echoed["raw_path"].encode(), echoed["query_string"].encode()) == (path, query)


def test_body_over_max_body_by_content_length(client: httpx.Client, upstream: Upstream) -> None:
    assert_refused(client.post("/api/small/x", content=b"x" * 1025), 413, "payload_too_large", upstream)
    assert client.post("/api/small/x", content=b"x" * 1024).status_code == 200


def test_chunked_body_over_max_body_aborts_the_upstream_request(client: httpx.Client, upstream: Upstream) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield b"y" * 512

    response = client.post("/api/small/x", content=chunks())
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert upstream.state.bodies_completed == 0
    # The aborted upstream connection was not handed to the next request in a broken state.
    assert client.post("/api/small/x", content=b"ok").json()["body_length"] == 2


# --- failures -------------------------------------------------------------------------------------------------------


def test_upstream_down_is_502(client: httpx.Client) -> None:
    response = client.get("/api/down/x")
    assert response.status_code == 502
    assert response.json()["error"] == "bad_gateway"
    assert "127.0.0.1" not in response.text


def test_slow_upstream_is_504_and_abandoned(client: httpx.Client, upstream: Upstream) -> None:
    response = client.get("/api/slow", params={"delay": "30"})
    assert response.status_code == 504
    assert response.json()["error"] == "upstream_timeout"
    assert upstream.state.slow_abandoned.wait(5)


def read_into(received: bytearray, response: httpx.Response) -> None:
    for chunk in response.iter_raw():
        received += chunk


def test_upstream_failing_mid_body_truncates_the_answer(client: httpx.Client) -> None:
    received = bytearray()
    with client.stream("GET", "/api/up/truncated") as response:
        assert response.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):  # the browser sees a truncated body, not a second answer
            read_into(received, response)
    assert bytes(received) == TRUNCATED
    assert client.get("/api/echo/x").status_code == 200


@pytest.mark.parametrize("status", [400, 403, 404, 409, 500, 503])
def test_upstream_errors_pass_through(client: httpx.Client, status: int) -> None:
    response = client.get(f"/api/up/status/{status}")
    assert response.status_code == status
    assert response.headers["x-upstream"] == "yes"
    assert response.json() == {"upstream_status": status}


# --- CSRF and the token provider ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-CSRF": "0"},
        {"X-CSRF": "1", "Sec-Fetch-Site": "cross-site"},
        {"X-CSRF": "1", "Sec-Fetch-Site": "same-site"},
        {"X-CSRF": "1", "Origin": "https://evil.example"},
        {"X-CSRF": "1", "Origin": "null"},
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_csrf_refused_before_the_token_provider(
    proxy_url: str, upstream: Upstream, bearer: StubBearer, headers: dict[str, str], method: str
) -> None:
    with httpx.Client(base_url=proxy_url) as client:
        response = client.request(method, "/api/echo/x", headers=headers)
    assert_refused(response, 401, "csrf", upstream)
    assert bearer.calls == 0


def test_same_origin_browser_headers_pass(client: httpx.Client) -> None:
    response = client.get("/api/echo/x", headers={"Sec-Fetch-Site": "same-origin", "Origin": PUBLIC_ORIGIN})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("error", "status"), [(Unauthenticated("no session"), 401), (ServiceUnavailable("store down"), 503)]
)
def test_token_provider_errors_are_the_answer(
    client: httpx.Client, upstream: Upstream, bearer: StubBearer, error: BffError, status: int
) -> None:
    bearer.error = error
    response = client.get("/api/echo/x")
    assert_refused(response, status, error.error, upstream)
    assert response.headers["cache-control"] == "no-store"
    if error.retry_after is not None:
        assert response.headers["retry-after"] == str(error.retry_after)
