"""Upstream calls through a forward proxy: a real CONNECT/absolute-form proxy on loopback for the happy paths
(``tests/support/forward_proxy.py``), and a scripted raw-socket proxy that answers CONNECT with garbage, refusals,
junk after its 200, a close mid-tunnel, an endless head or nothing at all.

Every test runs on both event loops (``tests/upstream/conftest.py``): uvloop's ``start_tls`` is its own."""

from __future__ import annotations

import asyncio
import datetime
import itertools
import logging
import re
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bff.config import RouteSettings
from bff.errors import UpstreamError, UpstreamProxyError, UpstreamProxyRefused, UpstreamTimeout
from bff.upstream import UpstreamClient
from bff.upstream.proxy import Tunnel
from tests.proxy.conftest import StubBearer, run_proxy
from tests.support.forward_proxy import forward_proxy
from tests.upstream.raw_upstream import start

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
PASSWORD = "proxy-password-4711"


def upstream_cert(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate (its own CA) for the DNS name ``name`` only."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


class Upstream:
    """Answers every request with ``ANSWER`` on a keep-alive connection; keeps each request head it read."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                self.heads.append(await reader.readuntil(b"\r\n\r\n"))
                writer.write(ANSWER)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()


async def get(client: UpstreamClient, url: str, **options: object) -> tuple[int, bytes]:
    kwargs = {"connect_timeout": 2.0, "timeout": 2.0, "environ": {}, "upstream": url, **options}
    response = await client.send("GET", url, [("x-marker", "1")], None, client.options(**kwargs))  # type: ignore[arg-type]
    try:
        return response.status, b"".join([chunk async for chunk in response])
    finally:
        response.release()


async def test_an_http_upstream_is_asked_in_absolute_form_with_the_proxy_credentials(client: UpstreamClient) -> None:
    upstream = Upstream()
    server, port = await start(upstream.handle)
    async with server:
        with forward_proxy(hosts={"upstream.test": "127.0.0.1"}, credentials=("egress", PASSWORD)) as (proxy, log):
            url = f"http://egress:{PASSWORD}@127.0.0.1:{proxy}"
            assert await get(client, f"http://upstream.test:{port}/x?q=1", proxy=url) == (200, b"ok")
    assert log.requests == [f"GET http://upstream.test:{port}/x?q=1"]
    assert log.authorized == [True]
    assert upstream.heads[0].startswith(b"GET /x?q=1 HTTP/1.1\r\nhost: upstream.test:")
    assert b"proxy-" not in upstream.heads[0].lower()


async def test_an_https_upstream_is_reached_through_connect_and_verified_by_its_own_name(
    client: UpstreamClient, tmp_path: Path
) -> None:
    cert_file, key_file = upstream_cert(tmp_path, "upstream.test")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    upstream = Upstream()
    server, port = await start(upstream.handle, context)
    async with server:
        hosts = {"upstream.test": "127.0.0.1", "other.test": "127.0.0.1"}
        with forward_proxy(hosts=hosts, credentials=("egress", PASSWORD)) as (proxy, log):
            options = {"proxy": f"http://egress:{PASSWORD}@127.0.0.1:{proxy}", "ca_bundle": str(cert_file)}
            assert await get(client, f"https://upstream.test:{port}/a", **options) == (200, b"ok")
            assert await get(client, f"https://upstream.test:{port}/b", **options) == (200, b"ok")
            # The certificate names upstream.test: a tunnel to a name it does not hold is refused.
            with pytest.raises(UpstreamError) as refused:
                await get(client, f"https://other.test:{port}/c", **options)
    assert not isinstance(refused.value, UpstreamProxyError)
    assert isinstance(refused.value.__cause__, ssl.SSLError)
    # One tunnel, kept alive and reused; the upstream saw its own requests in origin form, no proxy field.
    assert log.requests == [f"CONNECT upstream.test:{port}", f"CONNECT other.test:{port}"]
    assert log.authorized == [True, True]
    assert [h.split(b"\r\n")[0] for h in upstream.heads] == [b"GET /a HTTP/1.1", b"GET /b HTTP/1.1"]
    assert not any(b"proxy-" in h.lower() for h in upstream.heads)


async def test_the_pool_keys_connections_by_origin_and_proxy(client: UpstreamClient) -> None:
    upstream = Upstream()
    server, port = await start(upstream.handle)
    async with server:
        with forward_proxy() as (proxy, log):
            assert await get(client, f"http://127.0.0.1:{port}/direct") == (200, b"ok")
            assert await get(client, f"http://127.0.0.1:{port}/proxied", proxy=f"http://127.0.0.1:{proxy}") == (
                200,
                b"ok",
            )
            assert await get(client, f"http://127.0.0.1:{port}/direct") == (200, b"ok")
    assert log.requests == [f"GET http://127.0.0.1:{port}/proxied"]  # the idle direct connection was not taken


async def test_the_environment_chooses_the_proxy_and_no_proxy_bypasses_it(client: UpstreamClient) -> None:
    upstream = Upstream()
    server, port = await start(upstream.handle)
    async with server:
        with forward_proxy(hosts={"upstream.test": "127.0.0.1"}) as (proxy, log):
            environ = {"HTTP_PROXY": f"127.0.0.1:{proxy}", "NO_PROXY": "localhost,127.0.0.1"}
            assert await get(client, f"http://upstream.test:{port}/env", environ=environ) == (200, b"ok")
            assert await get(client, f"http://127.0.0.1:{port}/direct", environ=environ) == (200, b"ok")
            # The route's own key wins over the environment: "" is direct.
            options = client.options(
                connect_timeout=1, timeout=1, upstream="http://upstream.test", proxy="", environ=environ
            )
            assert options.proxy is None
    assert log.requests == [f"GET http://upstream.test:{port}/env"]


#: Scripts of a hostile proxy: what it answers to CONNECT, and the error the client must raise.
SCRIPTS: dict[str, tuple[list[bytes | float | str], type[UpstreamError], str]] = {
    "garbage": ([b"SSH-2.0-OpenSSH_9.6\r\n\r\n"], UpstreamProxyError, "upstream_proxy_error"),
    "http-0.9-ish": ([b"200\r\n\r\n"], UpstreamProxyError, "upstream_proxy_error"),
    "407": (
        [b'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="x"\r\n\r\n'],
        UpstreamProxyRefused,
        "upstream_proxy_refused",
    ),
    "403": ([b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"], UpstreamProxyRefused, "upstream_proxy_refused"),
    "502": ([b"HTTP/1.0 502 Bad Gateway\r\n\r\n"], UpstreamProxyRefused, "upstream_proxy_refused"),
    "interim": ([b"HTTP/1.1 100 Continue\r\n\r\n"], UpstreamProxyRefused, "upstream_proxy_refused"),
    "200 and junk": ([b"HTTP/1.1 200 OK\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"], UpstreamProxyError, "upstream_proxy_error"),
    "200 then junk": ([b"HTTP/1.1 200 OK\r\n\r\n", 0.05, b"junk" * 100], UpstreamError, "bad_gateway"),
    "200 then close": ([b"HTTP/1.1 200 OK\r\n\r\n", "close"], UpstreamError, "bad_gateway"),
    "close at once": (["close"], UpstreamProxyError, "upstream_proxy_error"),
    "half a head then close": ([b"HTTP/1.1 200 OK\r\n", "close"], UpstreamProxyError, "upstream_proxy_error"),
    "endless head": (
        [b"HTTP/1.1 200 OK\r\n", b"X-Pad: " + b"a" * 20000 + b"\r\n"],
        UpstreamProxyError,
        "upstream_proxy_error",
    ),
    "silence": ([], UpstreamTimeout, "upstream_timeout"),
}


@pytest.mark.parametrize("script", list(SCRIPTS))
async def test_a_hostile_proxy_gives_a_specific_error_and_never_a_tunnel(
    client: UpstreamClient, tmp_path: Path, script: str, caplog: pytest.LogCaptureFixture
) -> None:
    acts, expected, code = SCRIPTS[script]
    seen: list[bytes] = []

    async def hostile(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            seen.append(await reader.readuntil(b"\r\n\r\n"))
            for act in acts:
                if act == "close":
                    break
                if isinstance(act, float):
                    await asyncio.sleep(act)
                elif isinstance(act, bytes):
                    writer.write(act)
                    await writer.drain()
            else:
                await reader.read()  # hold the connection until the client gives up
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    cert_file, _ = upstream_cert(tmp_path, "upstream.test")
    server, port = await start(hostile)
    caplog.set_level(logging.DEBUG)
    async with server:
        with pytest.raises(UpstreamError) as failed:
            await get(
                client,
                "https://upstream.test/x",
                proxy=f"http://egress:{PASSWORD}@127.0.0.1:{port}",
                ca_bundle=str(cert_file),
                connect_timeout=0.3,
            )
    assert type(failed.value) is expected
    assert failed.value.error.startswith(code)
    assert failed.value.status == (504 if expected is UpstreamTimeout else 502)
    assert seen[0].startswith(b"CONNECT upstream.test:443 HTTP/1.1\r\n")
    assert b"proxy-authorization: Basic " in seen[0]
    assert PASSWORD not in str(failed.value)
    assert PASSWORD not in caplog.text


async def test_an_unreachable_proxy_is_a_proxy_error(client: UpstreamClient) -> None:
    server, port = await start(lambda r, w: asyncio.sleep(0))
    server.close()
    await server.wait_closed()
    with pytest.raises(UpstreamProxyError):
        await get(client, "https://upstream.test/x", proxy=f"http://127.0.0.1:{port}")


def test_a_refused_tunnel_is_a_502_with_its_code_and_no_credentials_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with forward_proxy(credentials=("egress", PASSWORD)) as (port, log):
        proxy = f"http://egress:not-{PASSWORD}@127.0.0.1:{port}"
        route = RouteSettings(path="/api", upstream="https://upstream.test", token="none", proxy=proxy)
        with run_proxy([route], StubBearer()) as url, httpx.Client(base_url=url, headers={"X-CSRF": "1"}) as browser:
            answer = browser.get("/api/x")
    assert answer.status_code == 502
    assert answer.json()["error"] == "upstream_proxy_refused"
    assert log.requests == ["CONNECT upstream.test:443"]
    assert log.authorized == [False]
    assert PASSWORD not in caplog.text
    assert PASSWORD not in answer.text


async def test_a_407_to_an_absolute_form_request_is_the_proxys_refusal_not_an_answer(client: UpstreamClient) -> None:
    upstream = Upstream()
    server, port = await start(upstream.handle)
    async with server:
        with forward_proxy(credentials=("egress", PASSWORD)) as (proxy, log), pytest.raises(UpstreamProxyRefused):
            await get(client, f"http://127.0.0.1:{port}/x", proxy=f"http://egress:nope@127.0.0.1:{proxy}")
    assert log.authorized == [False]
    assert upstream.heads == []
    assert client.idle_connections() == 0


def test_a_route_proxy_url_does_not_show_in_the_settings_repr() -> None:
    route = RouteSettings(path="/api", upstream="https://a.example", proxy=f"http://egress:{PASSWORD}@proxy:3128")
    assert PASSWORD not in repr(route)


class _FakeTransport:
    """Just enough of a transport for the Tunnel protocol: it records pausing and closing."""

    def __init__(self) -> None:
        self.paused = False
        self.closed = False

    def pause_reading(self) -> None:
        self.paused = True

    def close(self) -> None:
        self.closed = True


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    answer=st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda status, fields, tail: b"HTTP/1.1 %d X\r\n" % status + fields + b"\r\n" + tail,
            st.integers(100, 599),
            st.binary(max_size=60).filter(lambda b: b"\r\n\r\n" not in b and not b.endswith(b"\r")),
            st.binary(max_size=8),
        ),
    ),
    cuts=st.lists(st.integers(0, 300), max_size=4),
)
def test_the_tunnel_opens_only_on_a_complete_2xx_head_with_nothing_after_it(answer: bytes, cuts: list[int]) -> None:
    loop = asyncio.new_event_loop()
    try:
        tunnel = Tunnel(loop)
        transport = _FakeTransport()
        tunnel.connection_made(transport)  # type: ignore[arg-type]
        edges = sorted({0, len(answer), *(c for c in cuts if c < len(answer))})
        fed = b""
        for start, end in itertools.pairwise(edges):
            if transport.closed or transport.paused:
                break  # a paused transport delivers nothing more (the rest is the TLS handshake's)
            tunnel.data_received(answer[start:end])
            fed += answer[start:end]
        end = fed.find(b"\r\n\r\n")
        status = re.match(rb"HTTP/1\.[01] ([0-9]{3})(?: [^\r\n]*)?\r\n", fed)
        opens = end >= 0 and end + 4 == len(fed) and status is not None and 200 <= int(status.group(1)) < 300
        if opens:
            assert tunnel.established.done()
            assert tunnel.established.exception() is None
            assert transport.paused
            assert not transport.closed
        elif tunnel.established.done():
            error = tunnel.established.exception()
            assert isinstance(error, UpstreamProxyError)
            assert transport.closed
        else:
            assert end < 0  # still waiting for the end of the head, nothing decided
    finally:
        loop.close()
