"""Mutual TLS to upstreams (RFC 8705): a real TLS upstream on loopback that wants a client certificate, certificates
made by the test's own CA."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import uvloop

from bff.errors import UpstreamError, UpstreamTLSError
from bff.upstream import TransportOptions, UpstreamClient
from tests.support.mtls_upstream import MTLSUpstream, running_mtls_upstream
from tests.support.pki import TestPKI

PASSPHRASE = "correct horse battery staple"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return TestPKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def upstream(pki: TestPKI) -> Iterator[MTLSUpstream]:
    with running_mtls_upstream(pki.server(), pki.ca.cert) as server:
        yield server


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    upstream_client = UpstreamClient()
    yield upstream_client
    loop = asyncio.get_running_loop()
    lost: list[asyncio.Future[None]] = []
    for idle in upstream_client._idle.values():
        for connection in idle:
            if connection.closed:
                continue  # its peer already ended it
            done = loop.create_future()
            lost.append(done)
            original = connection.connection_lost

            def on_lost(exc: Exception | None, original: object = original, done: asyncio.Future[None] = done) -> None:
                done.set_result(None)
                original(exc)  # type: ignore[operator]

            connection.connection_lost = on_lost  # type: ignore[method-assign]
    await upstream_client.aclose()
    # A TLS connection ends with close_notify both ways (RFC 8446 6.1): let that finish before the loop closes.
    await asyncio.wait_for(asyncio.gather(*lost), 10)


def options(client: UpstreamClient, pki: TestPKI, cert: tuple[str, str, str | None] | None) -> TransportOptions:
    return client.options(connect_timeout=5, timeout=5, ca_bundle=str(pki.ca.cert), client_cert=cert)


async def get(client: UpstreamClient, url: str, opts: TransportOptions) -> tuple[int, dict[str, object]]:
    response = await client.send("GET", url + "/", [], None, opts)
    try:
        return response.status, json.loads(b"".join([chunk async for chunk in response]))
    finally:
        response.release()


async def test_the_routes_certificate_is_presented(
    client: UpstreamClient, pki: TestPKI, upstream: MTLSUpstream
) -> None:
    alice = pki.client("route-alice")
    status, body = await get(client, upstream.url, options(client, pki, (str(alice.cert), str(alice.key), None)))
    assert (status, body["client_cert"]) == (200, alice.x5t_s256)


async def test_an_encrypted_key_opens_with_its_passphrase(
    client: UpstreamClient, pki: TestPKI, upstream: MTLSUpstream
) -> None:
    locked = pki.client("route-locked", password=PASSPHRASE)
    status, body = await get(
        client, upstream.url, options(client, pki, (str(locked.cert), str(locked.key), PASSPHRASE))
    )
    assert (status, body["client_cert"]) == (200, locked.x5t_s256)


def refusal() -> type[UpstreamError]:
    """What a refused client certificate raises: on uvloop (``bff serve``'s loop) the TLS alert reaches bff; asyncio's
    own loop reports the same refusal as a connection reset, without the alert."""
    return UpstreamTLSError if isinstance(asyncio.get_running_loop(), uvloop.Loop) else UpstreamError


async def test_without_a_certificate_the_handshake_fails_as_a_tls_error(
    client: UpstreamClient, pki: TestPKI, upstream: MTLSUpstream
) -> None:
    before = len(upstream.seen)
    with pytest.raises(refusal()) as caught:
        await get(client, upstream.url, options(client, pki, None))
    assert caught.value.status == 502
    assert len(upstream.seen) == before  # no request reached the application


async def test_a_certificate_of_another_ca_is_refused(
    client: UpstreamClient, pki: TestPKI, upstream: MTLSUpstream, tmp_path: Path
) -> None:
    stranger = TestPKI(tmp_path / "other", "some other CA").client("stranger")
    before = len(upstream.seen)
    with pytest.raises(refusal()):
        await get(client, upstream.url, options(client, pki, (str(stranger.cert), str(stranger.key), None)))
    assert len(upstream.seen) == before  # no request reached the application


async def test_connections_made_with_one_certificate_never_serve_another(
    client: UpstreamClient, pki: TestPKI, upstream: MTLSUpstream
) -> None:
    """Two routes to the same origin with different certificates: the pool keeps their connections apart, while
    each route still reuses its own."""
    alice, bob = pki.client("pool-alice"), pki.client("pool-bob")
    by_cert = {
        alice.x5t_s256: options(client, pki, (str(alice.cert), str(alice.key), None)),
        bob.x5t_s256: options(client, pki, (str(bob.cert), str(bob.key), None)),
    }
    connections: dict[str, set[object]] = {alice.x5t_s256: set(), bob.x5t_s256: set()}
    for _ in range(3):
        for thumb, opts in by_cert.items():
            status, body = await get(client, upstream.url, opts)
            assert (status, body["client_cert"]) == (200, thumb)
            connections[thumb].add(body["connection"])
    assert len(connections[alice.x5t_s256]) == 1  # kept alive and reused within the route
    assert len(connections[bob.x5t_s256]) == 1
    assert connections[alice.x5t_s256].isdisjoint(connections[bob.x5t_s256])


def test_routes_with_the_same_certificate_share_one_context(pki: TestPKI) -> None:
    client = UpstreamClient()
    alice, bob = pki.client("share-alice"), pki.client("share-bob")
    first = options(client, pki, (str(alice.cert), str(alice.key), None))
    assert options(client, pki, (str(alice.cert), str(alice.key), None)).ssl is first.ssl
    assert options(client, pki, (str(bob.cert), str(bob.key), None)).ssl is not first.ssl
    assert options(client, pki, None).ssl is not first.ssl  # the bundle alone: no certificate in it


@pytest.fixture(scope="module")
def optional_upstream(pki: TestPKI) -> Iterator[MTLSUpstream]:
    with running_mtls_upstream(pki.server("optional"), pki.ca.cert, optional=True) as server:
        yield server


async def test_a_route_without_a_certificate_never_gets_a_connection_made_with_one(
    client: UpstreamClient, pki: TestPKI, optional_upstream: MTLSUpstream
) -> None:
    alice = pki.client("optional-alice")
    with_cert = options(client, pki, (str(alice.cert), str(alice.key), None))
    without = options(client, pki, None)
    for _ in range(3):
        assert (await get(client, optional_upstream.url, with_cert))[1]["client_cert"] == alice.x5t_s256
        assert (await get(client, optional_upstream.url, without))[1]["client_cert"] is None
