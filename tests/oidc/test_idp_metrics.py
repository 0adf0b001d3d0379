"""Every call bff makes to the IdP lands in ``http_client_request_duration_seconds`` with its endpoint
(``bff_route``), the IdP's host only, the method and the status, or ``error`` when no answer came: against the test
OpenID Provider over real HTTP on loopback, and a port that refuses connections."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import httpx
import pytest

from bff.config import OIDCSettings, Secret
from bff.errors import IdPUnavailable, InvalidGrant
from bff.idp_http import create_idp_client
from bff.oidc.provider import IdentityProvider
from tests.support.metric_deltas import MetricDeltas
from tests.support.oidc_provider import TestProvider

CALLS = "http_client_request_duration_seconds_count"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    client = create_idp_client(timeout=5)
    yield client
    await client.aclose()


def settings(issuer: str, provider: TestProvider | None = None) -> OIDCSettings:
    secret = provider.client_secret if provider is not None else "a-client-secret"
    return OIDCSettings(issuer=issuer, client_id="spa-bff", client_secret=Secret(secret or ""))


def calls(deltas: MetricDeltas) -> dict[tuple[tuple[str, str], ...], float]:
    return deltas.changes(CALLS)


def series(route: str, method: str, status: str) -> tuple[tuple[str, str], ...]:
    labels = {
        "bff_route": route,
        "http_request_method": method,
        "http_response_status_code": status,
        "server_address": "127.0.0.1",  # the host alone: no port, path or query
    }
    return tuple(sorted(labels.items()))


async def test_discovery_jwks_token_and_revocation_calls(idp: TestProvider, http: httpx.AsyncClient) -> None:
    provider = IdentityProvider(settings(idp.issuer, idp), http)
    deltas = MetricDeltas()
    await provider.load()
    await provider.jwks.refresh()
    idp.token_error = "invalid_grant"
    with pytest.raises(InvalidGrant):  # an answer all the same: 400
        await provider.client.refresh("a-refresh-token-the-idp-does-not-know")
    await provider.client.revoke("a-refresh-token-the-idp-does-not-know")
    assert calls(deltas) == {
        series("idp:discovery", "GET", "200"): 1,
        series("idp:jwks", "GET", "200"): 1,
        series("idp:token", "POST", "400"): 1,
        series("idp:revocation", "POST", "200"): 1,
    }


async def test_the_token_endpoint_probe_counts_as_a_token_call(idp: TestProvider, http: httpx.AsyncClient) -> None:
    provider = IdentityProvider(settings(idp.issuer, idp), http)
    await provider.load()
    idp.fail_token_endpoint_with = 502
    deltas = MetricDeltas()
    assert not await provider.client.probe(io_timeout=5)
    assert calls(deltas) == {series("idp:token", "POST", "502"): 1}


async def test_a_call_without_answer_is_status_error(http: httpx.AsyncClient) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        issuer = f"http://127.0.0.1:{closed.getsockname()[1]}/realms/x?tenant=secret-value"
        provider = IdentityProvider(settings(issuer), http)
        deltas = MetricDeltas()
        with pytest.raises(IdPUnavailable):
            await provider.load()
    assert calls(deltas) == {series("idp:discovery", "GET", "error"): 1}
