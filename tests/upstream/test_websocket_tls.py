"""The WebSocket client over TLS with a route's context (``UpstreamClient.options``): a ``wss://`` upstream behind
a private CA that wants a client certificate (mutual TLS, RFC 8705) accepts the route's certificate; without it the
handshake is refused and the caller gets a 502 without the URL."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve

from bff.errors import UpstreamError
from bff.upstream import UpstreamClient
from bff.upstream.websocket import WebSocketClient
from tests.support.pki import TestPKI

BOUND = 10


@asynccontextmanager
async def wss_upstream(pki: TestPKI) -> AsyncIterator[tuple[str, list[str]]]:
    """A ``wss://`` echo upstream that requires a client certificate of ``pki``; yields its URL and the common names
    of the certificates it saw."""
    server_cert = pki.server()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server_cert.cert, server_cert.key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=str(pki.ca.cert))
    seen: list[str] = []

    async def echo(connection: ServerConnection) -> None:
        peer = connection.transport.get_extra_info("peercert")
        seen.append(dict(x[0] for x in peer["subject"])["commonName"])
        async for message in connection:
            await connection.send(message)

    async with serve(echo, "127.0.0.1", 0, ssl=context) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"wss://127.0.0.1:{port}/live", seen


async def test_the_routes_client_certificate_opens_a_wss_upstream_behind_a_private_ca(tmp_path: Path) -> None:
    pki = TestPKI(tmp_path)
    client = pki.client("bff-live")
    options = UpstreamClient().options(
        connect_timeout=BOUND,
        timeout=BOUND,
        ca_bundle=str(pki.ca.cert),
        client_cert=(str(client.cert), str(client.key), None),
    )
    assert isinstance(options.ssl, ssl.SSLContext)
    async with wss_upstream(pki) as (url, seen):
        ws = await asyncio.wait_for(WebSocketClient().connect(url, [], [], tls=options.ssl), BOUND)
        try:
            await ws.send_text("hello")
            frame = await asyncio.wait_for(ws.receive(), BOUND)
            assert (frame.kind, frame.data) == ("text", "hello")
        finally:
            await ws.close()
    assert seen == ["bff-live"]


async def test_without_the_client_certificate_the_handshake_is_a_502_without_the_url(tmp_path: Path) -> None:
    pki = TestPKI(tmp_path)
    options = UpstreamClient().options(connect_timeout=BOUND, timeout=BOUND, ca_bundle=str(pki.ca.cert))
    assert isinstance(options.ssl, ssl.SSLContext)
    async with wss_upstream(pki) as (url, seen):
        with pytest.raises(UpstreamError) as refused:
            await asyncio.wait_for(WebSocketClient().connect(url, [], [], tls=options.ssl), BOUND)
    assert "127.0.0.1" not in refused.value.message
    assert seen == []
