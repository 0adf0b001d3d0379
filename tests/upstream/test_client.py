"""The data-plane client at its edge, against scripted upstreams that answer with exact bytes: what goes on the
wire (the request line and headers as given, framing bff's own, nothing injectable), how answers are read (interim
answers, HEAD, 204, bodies delimited by close, trailers, malformed or oversized answers), keep-alive reuse and its
limits, flow control, TLS verification with per-route CA bundles, and failures translated to bff errors.

Every test runs on both event loops (``tests/upstream/conftest.py``): ``bff serve`` runs on uvloop, whose transports are
not asyncio's classes."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httptools
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bff.errors import UpstreamError, UpstreamTimeout
from bff.upstream import MAX_HEADER_BYTES, UpstreamClient, UpstreamResponse
from bff.upstream.request_head import split_url
from tests.upstream.raw_upstream import EndlessAnswer, serving, start

BOUND = 5.0  # seconds a test waits for something that should happen at once; only a failure waits this long
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nSet-Cookie: a=1\r\n\r\nok"


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bff test upstream")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(ANSWER)
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
        pass  # a client that refused our certificate hangs up
    finally:
        writer.close()


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # reads the request, never answers, ends when the client gives up and closes
    writer.close()


async def get(client: UpstreamClient, url: str, **options: object) -> tuple[int, bytes]:
    kwargs = {"connect_timeout": 2.0, "timeout": 2.0, **options}
    response = await client.send("GET", url, [], None, client.options(**kwargs))  # type: ignore[arg-type]
    try:
        return response.status, b"".join([chunk async for chunk in response])
    finally:
        response.release()


async def test_tls_is_verified_and_a_route_ca_bundle_is_trusted(client: UpstreamClient, tmp_path: Path) -> None:
    cert_file, key_file = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    server, port = await start(answer, context)
    async with server:
        with pytest.raises(UpstreamError) as refused:  # unknown CA: refused, not silently accepted
            await get(client, f"https://127.0.0.1:{port}/x")
        assert isinstance(refused.value.__cause__, ssl.SSLError | OSError)
        assert await get(client, f"https://127.0.0.1:{port}/x", ca_bundle=str(cert_file)) == (200, b"ok")


def test_ca_bundle_contexts_are_cached(tmp_path: Path) -> None:
    cert_file, _ = self_signed(tmp_path)
    client = UpstreamClient()
    first = client.options(connect_timeout=1, timeout=1, ca_bundle=str(cert_file))
    second = client.options(connect_timeout=2, timeout=3, ca_bundle=str(cert_file))
    assert isinstance(first.ssl, ssl.SSLContext)
    assert first.ssl is second.ssl
    assert first.ssl.verify_mode == ssl.CERT_REQUIRED
    assert first.ssl.check_hostname
    assert client.options(connect_timeout=1, timeout=1).ssl is True


async def test_connection_refused_is_upstream_error(client: UpstreamClient) -> None:
    server, port = await start(answer)
    server.close()
    await server.wait_closed()
    with pytest.raises(UpstreamError) as caught:
        await get(client, f"http://127.0.0.1:{port}/secret-path?token=abc")
    assert type(caught.value) is UpstreamError
    assert "127.0.0.1" not in caught.value.message
    assert "token" not in caught.value.message
    assert caught.value.__cause__ is not None


async def test_no_answer_within_the_timeout_is_upstream_timeout(client: UpstreamClient) -> None:
    server, port = await start(silent)
    async with server:
        with pytest.raises(UpstreamTimeout):
            await get(client, f"http://127.0.0.1:{port}/x", timeout=0.2)


class Scripted:
    """An upstream that records each request's exact bytes and answers the n-th request with ``answers[n]``.

    An answer is bytes, or ``CLOSE`` (hang up without answering). After each answer the connection stays open for
    the next request unless ``close_after`` says otherwise. ``connections`` counts TCP connections accepted."""

    def __init__(self, answers: list[bytes | None], *, close_after: bool = False) -> None:
        self.answers = answers
        self.close_after = close_after
        self.requests: list[bytes] = []
        self.connections = 0
        self.closed = asyncio.Event()
        self.writers: list[asyncio.StreamWriter] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lower = head.lower()
                body = b""
                if b"transfer-encoding: chunked" in lower:
                    body = await reader.readuntil(b"0\r\n\r\n")
                elif b"content-length: " in lower:
                    length = int(lower.split(b"content-length: ")[1].split(b"\r\n")[0])
                    body = await reader.readexactly(length)
                self.requests.append(head + body)
                answer = self.answers[len(self.requests) - 1]
                if answer is None:
                    return
                writer.write(answer)
                await writer.drain()
                if self.close_after:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self.closed.set()


CLOSE = None
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@contextlib.asynccontextmanager
async def scripted(answers: list[bytes | None], **kwargs: bool) -> AsyncIterator[tuple[Scripted, str]]:
    upstream = Scripted(answers, **kwargs)
    async with serving(upstream) as url:
        yield upstream, url


async def send(
    client: UpstreamClient,
    url: str,
    *,
    method: str = "GET",
    headers: list[tuple[str, str]] | None = None,
    body: bytes | AsyncIterator[bytes] | None = None,
    read_timeout: float = 2.0,
) -> UpstreamResponse:
    options = client.options(connect_timeout=2, timeout=read_timeout)
    return await client.send(method, url, headers or [], body, options)


async def read_all(response: UpstreamResponse) -> bytes:
    try:
        return b"".join([chunk async for chunk in response])
    finally:
        response.release()


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_the_request_goes_out_as_given_and_framed_by_bff(client: UpstreamClient) -> None:
    async with scripted([OK, OK]) as (upstream, url):
        headers = [("X-Mixed-Case", "v1"), ("x-repeated", "a"), ("x-repeated", "b"), ("x-octets", "caf\u00c3\u00a9")]
        await read_all(await send(client, url + "/a/%2e%2E/b?x=%41&y", headers=headers))
        # A caller's Host and framing fields are replaced by what the request really is.
        framing = [("host", "evil.example"), ("content-length", "99"), ("transfer-encoding", "chunked")]
        await read_all(await send(client, url + "/up", method="POST", headers=framing, body=b"abc"))
    port = url.rsplit(":", 1)[1]
    assert upstream.requests[0] == (
        f"GET /a/%2e%2E/b?x=%41&y HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        "x-mixed-case: v1\r\nx-repeated: a\r\nx-repeated: b\r\nx-octets: caf\xc3\xa9\r\n\r\n"
    ).encode("latin-1")  # nothing invented: no Accept, Accept-Encoding, User-Agent, Cookie; octets untouched
    posted = f"POST /up HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-length: 3\r\n\r\nabc"
    assert upstream.requests[1] == posted.encode()
    assert upstream.connections == 1  # kept alive and reused


async def test_streamed_bodies_are_chunked_or_sent_at_their_declared_length(client: UpstreamClient) -> None:
    async with scripted([OK, OK, OK]) as (upstream, url):
        await read_all(await send(client, url, method="PUT", body=chunks(b"ab", b"", b"cde")))
        declared = [("content-length", "5")]
        await read_all(await send(client, url, method="PUT", headers=declared, body=chunks(b"ab", b"cde")))
        await read_all(await send(client, url, method="POST"))
    assert upstream.requests[0].endswith(b"transfer-encoding: chunked\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n")
    assert upstream.requests[1].endswith(b"content-length: 5\r\n\r\nabcde")
    assert upstream.requests[2].endswith(b"content-length: 0\r\n\r\n")  # POST without a body says so


@pytest.mark.parametrize("declared", ["3", "9"])
async def test_a_stream_that_disagrees_with_its_content_length_fails(client: UpstreamClient, declared: str) -> None:
    async with scripted([OK]) as (upstream, url):
        body = chunks(b"abcde")
        with pytest.raises(UpstreamError) as caught:
            await read_all(await send(client, url, method="PUT", headers=[("content-length", declared)], body=body))
        assert isinstance(caught.value.__cause__, ValueError)
        await asyncio.wait_for(upstream.closed.wait(), BOUND)
    assert upstream.requests == []  # the upstream never got a complete request it could take for the whole one


@pytest.mark.parametrize(
    ("headers", "target"),
    [
        ([("x-token", "a\r\nX-Injected: 1")], "/"),
        ([("x-token", "a\nX-Injected: 1")], "/"),
        ([("x-token", "a\rb")], "/"),
        ([("x-token", "a\x00b")], "/"),
        ([("x-token", "\u20ac")], "/"),  # not an octet: refused rather than re-encoded
        ([("x bad", "1")], "/"),
        ([("x:bad", "1")], "/"),
        ([("", "1")], "/"),
        ([], "/a b"),
        ([], "/a\r\nX-Injected: 1"),
        ([], "/\u00e9"),
    ],
)
async def test_nothing_can_break_out_of_its_line(
    client: UpstreamClient, headers: list[tuple[str, str]], target: str
) -> None:
    async with scripted([OK]) as (upstream, url):
        with pytest.raises(UpstreamError) as caught:
            await send(client, url + target, headers=headers)
    assert "X-Injected" not in caught.value.message
    assert "\u20ac" not in caught.value.message
    assert upstream.connections == 0  # refused before anything was sent


async def test_a_method_that_is_not_a_token_is_refused(client: UpstreamClient) -> None:
    async with scripted([OK]) as (upstream, url):
        with pytest.raises(UpstreamError):
            await send(client, url, method="GET /x HTTP/1.1\r\n")
    assert upstream.connections == 0


@pytest.mark.parametrize(
    ("answer", "status", "body"),
    [
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK, 200, b"ok"),
        (b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n", 204, b""),
        (b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\n\r\n', 304, b""),
        (b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", 204, b""),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Trailer: 1\r\n\r\n", 200, b"ok"),
    ],
)
async def test_answers_are_read_as_http_frames_them(
    client: UpstreamClient, answer: bytes, status: int, body: bytes
) -> None:
    async with scripted([answer, OK]) as (upstream, url):
        response = await send(client, url)
        assert response.status == status
        assert all(name.lower() not in (b"link", b"x-trailer") for name, _ in response.headers)
        assert await read_all(response) == body
        assert await read_all(await send(client, url)) == b"ok"  # the connection was left clean for the next one
    assert upstream.connections == 1


@pytest.mark.parametrize(("length", "connections"), [(b"0", 1), (b"10", 2)])
async def test_head_reads_no_body_whatever_content_length_says(
    client: UpstreamClient, length: bytes, connections: int
) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: " + length + b"\r\n\r\n"
    async with scripted([head, OK, OK]) as (upstream, url):
        response = await send(client, url, method="HEAD")
        assert (response.status, await read_all(response)) == (200, b"")
        assert await read_all(await send(client, url)) == b"ok"
    # A length that announced a body: the body may still come, so that connection is not reused.
    assert upstream.connections == connections


async def test_a_body_delimited_by_close_is_whole_and_its_connection_is_not_reused(client: UpstreamClient) -> None:
    async with scripted([b"HTTP/1.1 200 OK\r\n\r\nuntil close", OK], close_after=True) as (upstream, url):
        assert await read_all(await send(client, url)) == b"until close"
        assert await read_all(await send(client, url)) == b"ok"
    assert upstream.connections == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # then the upstream hangs up
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ],
)
async def test_a_truncated_body_is_an_error_not_an_end(client: UpstreamClient, answer: bytes) -> None:
    async with scripted([answer], close_after=True) as (_, url):
        response = await send(client, url)
        with pytest.raises(UpstreamError):
            await read_all(response)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nBad Header: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * MAX_HEADER_BYTES + b"\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    ],
)
async def test_a_malformed_or_oversized_answer_is_a_bad_gateway(client: UpstreamClient, answer: bytes) -> None:
    async with scripted([answer]) as (_, url):
        with pytest.raises(UpstreamError) as caught:
            await send(client, url)
    assert type(caught.value) is UpstreamError
    assert isinstance(caught.value.__cause__, httptools.HttpParserError | httptools.HttpParserUpgrade)


async def test_bytes_after_a_complete_answer_spoil_the_connection(client: UpstreamClient) -> None:
    async with scripted([OK + b"HTTP/1.1 200 OK\r\n\r\n", OK]) as (upstream, url):
        assert await read_all(await send(client, url)) == b"ok"
        assert await read_all(await send(client, url)) == b"ok"
    assert upstream.connections == 2


async def test_connection_close_and_unread_bodies_are_not_reused(client: UpstreamClient) -> None:
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    async with scripted([closing, OK, OK]) as (upstream, url):
        assert await read_all(await send(client, url)) == b"ok"
        (await send(client, url)).release()  # the body was never read: the connection cannot serve another request
        assert await read_all(await send(client, url)) == b"ok"
    assert upstream.connections == 3


async def test_a_kept_alive_connection_closed_under_a_request_is_retried_once_when_safe(
    client: UpstreamClient,
) -> None:
    # The upstream hangs up on the second request of each connection without answering (its keep-alive timeout).
    async with scripted([OK, CLOSE, OK, CLOSE]) as (upstream, url):
        assert await read_all(await send(client, url)) == b"ok"
        assert await read_all(await send(client, url)) == b"ok"  # GET: sent again on a new connection
        assert upstream.connections == 2
        with pytest.raises(UpstreamError):  # POST is not idempotent: never sent twice
            await send(client, url, method="POST", body=b"x")
    assert upstream.connections == 2


async def test_a_body_that_stalls_times_out(client: UpstreamClient) -> None:
    async with scripted([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"]) as (_, url):
        response = await send(client, url, read_timeout=0.2)
        assert await response.read_chunk() == b"abc"
        with pytest.raises(UpstreamTimeout):
            await response.read_chunk()
        response.close()


async def test_an_unread_answer_stops_the_socket_being_read() -> None:
    client = UpstreamClient(read_bufsize=64 * 1024)
    big = 8 * 1024 * 1024
    try:
        async with scripted([b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % big + b"x" * big]) as (_, url):
            response = await send(client, url)
            await asyncio.sleep(0.3)  # the upstream keeps sending; nobody reads
            connection = response._connection
            assert connection is not None
            assert connection._reading_paused
            assert connection._buffered < 1024 * 1024  # bounded by read_bufsize plus one socket read
            received = 0
            async for chunk in response:
                received += len(chunk)
            assert received == big
            response.release()
    finally:
        await client.aclose()


async def test_idle_connections_are_closed_after_the_keepalive_timeout() -> None:
    client = UpstreamClient(keepalive_timeout=0.2)
    try:
        async with scripted([OK]) as (upstream, url):
            assert await read_all(await send(client, url)) == b"ok"
            assert client.idle_connections() == 1
            await asyncio.wait_for(upstream.closed.wait(), BOUND)
            assert client.idle_connections() == 0
    finally:
        await client.aclose()


async def test_aclose_closes_idle_connections() -> None:
    client = UpstreamClient()
    async with scripted([OK]) as (upstream, url):
        assert await read_all(await send(client, url)) == b"ok"
        await client.aclose()
        await asyncio.wait_for(upstream.closed.wait(), BOUND)


async def test_set_cookie_passes_as_bytes_and_no_cookie_is_sent_back(client: UpstreamClient) -> None:
    answer = b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nContent-Length: 2\r\n\r\nok"
    async with scripted([answer, OK]) as (upstream, url):
        response = await send(client, url)
        assert (b"Set-Cookie", b"a=1") in response.headers  # exactly as received; the proxy drops it later
        await read_all(response)
        await read_all(await send(client, url))
    assert b"cookie" not in upstream.requests[1].lower()


async def test_idle_connections_per_origin_are_capped(client: UpstreamClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bff.upstream.pool.MAX_IDLE_PER_ORIGIN", 2)
    async with scripted([OK, OK, OK]) as (upstream, url):
        responses = await asyncio.gather(*(send(client, url) for _ in range(3)))
        assert upstream.connections == 3
        for response in responses:
            await read_all(response)
        assert client.idle_connections() == 2


@pytest.mark.parametrize(
    ("url", "host", "port", "authority", "target"),
    [
        ("http://127.0.0.1:8080/a/b?c=d", "127.0.0.1", 8080, "127.0.0.1:8080", "/a/b?c=d"),
        ("https://api.example/x", "api.example", 443, "api.example", "/x"),
        ("HTTPS://api.example:443", "api.example", 443, "api.example", "/"),
        ("http://api.example:80?q=1", "api.example", 80, "api.example", "/?q=1"),
        ("http://[::1]:9000/v1#fragment", "::1", 9000, "[::1]:9000", "/v1"),
        ("https://[2001:db8::1]/", "2001:db8::1", 443, "[2001:db8::1]", "/"),
    ],
)
def test_urls_split_into_origin_and_target(url: str, host: str, port: int, authority: str, target: str) -> None:
    origin, split_target = split_url(url)
    assert (origin.host, origin.port, origin.authority, split_target) == (host, port, authority, target)


@pytest.mark.parametrize(
    "url", ["ftp://h/x", "//h/x", "http:///x", "http://user:pw@h/x", "http://h:0/", "http://h:99999/", "http://[::1/"]
)
def test_urls_that_are_not_absolute_http_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"URL|authority"):
        split_url(url)


# --- Hostile upstreams: resends, slow uploads, bytes that belong to no request, malformed interim answers -----------


Step = bytes | None | str


class PerConnection:
    """An upstream that answers the i-th request of the n-th connection with ``scripts[n][i]`` (the last script serves
    every later connection): bytes, ``CLOSE`` to hang up, or ``SILENT`` to keep reading without ever answering. It
    records every request with its connection number."""

    def __init__(self, scripts: list[list[Step]]) -> None:
        self.scripts = scripts
        self.requests: list[tuple[int, bytes]] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = len(self.writers)
        self.writers.append(writer)
        try:
            for step in self.scripts[min(number, len(self.scripts) - 1)]:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                if b"content-length: " in head:
                    length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
                self.requests.append((number, head + await reader.readexactly(length)))
                if step is CLOSE:
                    return
                if step == SILENT:
                    await reader.read()
                    return
                assert isinstance(step, bytes)
                writer.write(step)
                await writer.drain()
            await reader.read()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


SILENT = "silent"


@contextlib.asynccontextmanager
async def per_connection(*scripts: list[Step]) -> AsyncIterator[tuple[PerConnection, str]]:
    upstream = PerConnection(list(scripts))
    async with serving(upstream) as url:
        yield upstream, url


async def test_a_timeout_on_a_reused_connection_is_never_resent(client: UpstreamClient) -> None:
    async with per_connection([OK, SILENT]) as (upstream, url):
        assert await read_all(await send(client, url)) == b"ok"
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(UpstreamTimeout):
            await send(client, url, method="PUT", body=b'{"charge": 100}', read_timeout=0.5)
        waited = loop.time() - began
        await asyncio.sleep(0.1)  # a resend, if any, would have reached the upstream by now
    charges = [request for _, request in upstream.requests if request.startswith(b"PUT")]
    assert len(charges) == 1  # the upstream may have charged: never a second time
    assert waited < 0.9  # one timeout, not two


async def test_a_resend_goes_on_a_fresh_connection_never_another_pooled_one(client: UpstreamClient) -> None:
    # Each connection answers its first request and hangs up on its second one, as a keep-alive timeout would.
    async with per_connection([OK, CLOSE]) as (upstream, url):
        first = await asyncio.gather(send(client, url), send(client, url))
        for response in first:
            assert await read_all(response) == b"ok"
        assert client.idle_connections() == 2
        assert await read_all(await send(client, url)) == b"ok"  # resent once, on a new connection
        with pytest.raises(UpstreamError):  # a POST is never resent after it may have been read
            await send(client, url, method="POST", body=b"x")
    assert len(upstream.writers) == 3
    assert sum(request.startswith(b"POST") for _, request in upstream.requests) == 1


async def test_a_request_the_kernel_refused_to_send_is_resent_whatever_its_method(client: UpstreamClient) -> None:
    """A pooled connection the upstream reset while idle, before bff's loop noticed: the write fails at once, so the
    upstream provably never read the request, and even a POST goes out again, once, on a new connection."""
    accepted: list[asyncio.StreamWriter] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0]) if b"content-length" in head else 0
                posted.append(head + await reader.readexactly(length))
                writer.write(OK)
                await writer.drain()

    posted: list[bytes] = []
    server, port = await start(handler)
    async with server:
        url = f"http://127.0.0.1:{port}"
        assert await read_all(await send(client, url)) == b"ok"
        pooled = accepted[0].get_extra_info("socket")
        pooled.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        accepted[0].transport.abort()  # an RST, sent as the loop runs the abort
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        # Blocks the loop on purpose: bff's side has not read the reset when the request is written.
        time.sleep(0.05)  # noqa: ASYNC251
        assert await read_all(await send(client, url, method="POST", body=b"once")) == b"ok"
        for writer in accepted:
            writer.close()
    assert [request for request in posted if request.startswith(b"POST")] == [posted[-1]]
    assert len(accepted) == 2


async def test_a_slow_streamed_upload_keeps_the_answer_timer_from_expiring(client: UpstreamClient) -> None:
    piece = b"u" * 10240

    async def slow_body() -> AsyncIterator[bytes]:
        for _ in range(20):  # 200 KiB over ~3 s on a route whose timeout is 1 s
            await asyncio.sleep(0.15)
            yield piece

    async with scripted([OK]) as (upstream, url):
        declared = [("content-length", str(20 * len(piece)))]
        response = await send(client, url, method="PUT", headers=declared, body=slow_body(), read_timeout=1.0)
        assert await read_all(response) == b"ok"
    assert upstream.requests[0].partition(b"\r\n\r\n")[2] == piece * 20


async def test_an_upload_that_stops_making_progress_still_times_out(client: UpstreamClient) -> None:
    async def stalled_body() -> AsyncIterator[bytes]:
        yield b"start"
        await asyncio.sleep(30)
        yield b"never"

    async with per_connection([SILENT]) as (_, url):
        with pytest.raises(UpstreamTimeout):
            await asyncio.wait_for(send(client, url, method="PUT", body=stalled_body(), read_timeout=0.3), BOUND)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",  # to a HEAD
        b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
)
async def test_an_answer_that_announced_a_body_it_could_not_have_is_never_reused(
    client: UpstreamClient, answer: bytes
) -> None:
    """The anonymous HEAD and alice's GET: a non-compliant upstream sends the announced body late, when the next
    request arrived. Had the connection gone back to the pool, alice would read the stray bytes as her answer."""
    stray = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-For: anon\r\n\r\nanon"
    alice = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-For: alice\r\n\r\nalice"
    async with per_connection([answer, stray + alice], [alice]) as (upstream, url):
        method = "HEAD" if answer.startswith(b"HTTP/1.1 200") else "GET"
        assert await read_all(await send(client, url, method=method)) == b""
        response = await send(client, url, headers=[("authorization", "Bearer alice")])
        assert (b"X-For", b"alice") in response.headers
        assert await read_all(response) == b"alice"
    assert len(upstream.writers) == 2


async def test_bytes_after_a_complete_answer_in_the_same_read_rewrite_nothing(client: UpstreamClient) -> None:
    answer = b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length: 2\r\n\r\nok"
    trailing = b"HTTP/1.1 404 Not Found\r\nX-Injected: 1\r\nContent-Length: 0\r\n\r\n"
    async with scripted([answer + trailing, OK]) as (upstream, url):
        response = await send(client, url)
        assert response.status == 200
        assert list(response.headers) == [(b"Cache-Control", b"no-store"), (b"Content-Length", b"2")]
        assert await read_all(response) == b"ok"
        assert client.idle_connections() == 0  # closed, not pooled
        assert await read_all(await send(client, url)) == b"ok"
    assert upstream.connections == 2


async def test_late_bytes_on_an_idle_pooled_connection_close_it(client: UpstreamClient) -> None:
    async with scripted([OK, OK]) as (upstream, url):
        assert await read_all(await send(client, url)) == b"ok"
        [pooled] = [connection for idle in client._idle.values() for connection in idle]
        upstream.writers[0].write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray")
        for _ in range(int(BOUND / 0.01)):
            if pooled.closed:
                break
            await asyncio.sleep(0.01)
        assert pooled.closed
        assert await read_all(await send(client, url)) == b"ok"
    assert upstream.connections == 2


@pytest.mark.parametrize(
    "interim",
    [
        # The interim answer's "content" is itself a whole answer: taken at its word, it would be the final one.
        b"HTTP/1.1 100 Continue\r\nContent-Length: 41\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nXX",
        b"HTTP/1.1 103 Early Hints\r\nTransfer-Encoding: chunked\r\n\r\n",
    ],
)
async def test_an_interim_answer_that_announces_content_is_refused(client: UpstreamClient, interim: bytes) -> None:
    async with scripted([interim + OK]) as (_, url):
        with pytest.raises(UpstreamError) as caught:
            await read_all(await send(client, url))
    assert type(caught.value) is UpstreamError


@pytest.mark.parametrize("coding", [b"gzip", b"chunked, gzip"])
async def test_a_transfer_coding_that_is_not_chunked_is_delimited_by_close(
    client: UpstreamClient, coding: bytes
) -> None:
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + coding + b"\r\n\r\nraw bytes until close"
    async with scripted([answer, OK], close_after=True) as (upstream, url):
        assert await read_all(await send(client, url)) == b"raw bytes until close"
        assert await read_all(await send(client, url)) == b"ok"
    assert upstream.connections == 2


async def test_an_endless_answer_head_is_refused_as_soon_as_it_passes_the_limit(client: UpstreamClient) -> None:
    total = 48 * 1024 * 1024
    upstream = EndlessAnswer(b"HTTP/1.1 200 OK\r\nX-Big: ", b"a" * 65536, total)
    server, port = await start(upstream.handler)
    async with server:
        with pytest.raises(UpstreamError) as caught:
            await send(client, f"http://127.0.0.1:{port}")
        await asyncio.wait_for(upstream.finished.wait(), BOUND)
    assert isinstance(caught.value.__cause__, httptools.HttpParserError)
    assert (
        upstream.sent < total // 4
    )  # refused at the limit, not after reading the whole head (socket buffers hold a few MiB)
