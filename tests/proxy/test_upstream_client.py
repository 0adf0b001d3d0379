"""The data-plane client at its edge: TLS verification, per-route CA bundles, and failures translated to bff errors."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bff.errors import UpstreamError, UpstreamTimeout
from bff.upstream_client import UpstreamClient

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nSet-Cookie: a=1\r\n\r\nok"

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


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


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    upstream_client = UpstreamClient()
    yield upstream_client
    await upstream_client.aclose()


async def start(handler: Handler, context: ssl.SSLContext | None = None) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=context)
    return server, server.sockets[0].getsockname()[1]


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


async def test_cookies_are_not_kept_and_bytes_pass_untouched(client: UpstreamClient) -> None:
    server, port = await start(answer)
    async with server:
        assert await get(client, f"http://127.0.0.1:{port}/x") == (200, b"ok")
        session = client._get_session()
        assert len(session.cookie_jar) == 0
