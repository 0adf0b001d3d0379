"""``tls_client_auth`` and ``self_signed_tls_client_auth`` (RFC 8705 2) and the IdP's ``mtls_endpoint_aliases``
(RFC 8705 5), as the client forms its requests. The end-to-end run against the reference IdP over mutual TLS is in
``tests/test_mtls_e2e.py``; here, the answers that a real IdP rarely gives (aliases that are not https)."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import pytest
import respx

from bff.config import OIDCSettings, Secret
from bff.errors import ConfigError
from bff.oidc.client import OIDCClient
from bff.oidc.client_auth import ClientAuth
from bff.oidc.discovery import ProviderMetadata
from tests.support.clock import FakeClock

ISSUER = "https://idp.example.com"
ANSWER = {"access_token": "AT-unit", "token_type": "Bearer", "expires_in": 300}


def metadata(aliases: object) -> ProviderMetadata:
    return ProviderMetadata.from_json(
        {
            "issuer": ISSUER,
            "authorization_endpoint": f"{ISSUER}/authorize",
            "token_endpoint": f"{ISSUER}/token",
            "jwks_uri": f"{ISSUER}/jwks",
            "revocation_endpoint": f"{ISSUER}/revoke",
            "mtls_endpoint_aliases": aliases,
        },
        issuer=ISSUER,
    )


def settings(method: str, cert: str | None = "/run/client.crt", **extra: object) -> OIDCSettings:
    return OIDCSettings(
        issuer=ISSUER,
        client_id="spa-bff",
        token_endpoint_auth_method=method,  # type: ignore[arg-type]
        client_cert=cert,
        client_key="/run/client.key" if cert else None,
        **extra,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("method", ["tls_client_auth", "self_signed_tls_client_auth"])
async def test_the_certificate_authenticates_and_only_client_id_is_sent(method: str) -> None:
    aliases = {"token_endpoint": "https://mtls.idp.example.com/token"}
    async with httpx.AsyncClient() as http:
        client = OIDCClient(ClientAuth(settings(method), metadata(aliases), http, clock=FakeClock(time.time())))
        with respx.mock(assert_all_called=True) as router:
            route = router.post("https://mtls.idp.example.com/token").respond(json=ANSWER)
            await client.refresh("RT-unit")
    request = route.calls.last.request
    form = dict(parse_qsl(request.content.decode()))
    assert form == {"grant_type": "refresh_token", "refresh_token": "RT-unit", "client_id": "spa-bff"}
    assert "authorization" not in request.headers


async def test_aliases_are_used_only_with_a_client_certificate_and_only_if_https() -> None:
    aliases = {
        "token_endpoint": "https://mtls.idp.example.com/token",
        "revocation_endpoint": "http://mtls.idp.example.com/revoke",  # not TLS: ignored, the plain one is used
    }
    secret = Secret("unit-test-client-secret-0123456789abcdef")
    async with httpx.AsyncClient() as http:
        with_cert = OIDCClient(
            ClientAuth(settings("client_secret_basic", client_secret=secret), metadata(aliases), http, clock=time.time)
        )
        without_settings = settings("client_secret_basic", cert=None, client_secret=secret)
        without = OIDCClient(ClientAuth(without_settings, metadata(aliases), http, clock=time.time))
        with respx.mock(assert_all_called=True) as router:
            alias = router.post("https://mtls.idp.example.com/token").respond(json=ANSWER)
            plain = router.post(f"{ISSUER}/token").respond(json=ANSWER)
            revoke = router.post(f"{ISSUER}/revoke").respond(200)
            await with_cert.refresh("RT-1")
            await without.refresh("RT-2")
            await with_cert.revoke("RT-1")
    assert (alias.call_count, plain.call_count, revoke.call_count) == (1, 1, 1)


@pytest.mark.parametrize("aliases", [None, "https://x", ["https://x"], {"token_endpoint": 7}])
def test_malformed_aliases_are_ignored(aliases: object) -> None:
    assert metadata(aliases).mtls_endpoint_aliases == {}


def test_tls_client_auth_without_a_certificate_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"oidc.client_cert: is required for tls_client_auth"):
        ClientAuth(settings("tls_client_auth", cert=None), metadata(None), httpx.AsyncClient(), clock=time.time)
