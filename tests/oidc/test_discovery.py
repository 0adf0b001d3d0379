"""Discovery: the real TestProvider over HTTP, and hand-made documents for what an IdP should never answer."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from bff.errors import IdPUnavailable, InvalidProviderMetadata
from bff.idp_http import create_idp_client
from bff.oidc.discovery import fetch_metadata
from tests.support.oidc_provider import TestProvider
from tests.support.servers import serve

ISSUER = "https://idp.example.com"


def document(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "issuer": ISSUER,
        "authorization_endpoint": f"{ISSUER}/authorize",
        "token_endpoint": f"{ISSUER}/token",
        "jwks_uri": f"{ISSUER}/jwks",
        "response_types_supported": ["code"],
    }
    for name, value in changes.items():
        if value is None:
            doc.pop(name, None)
        else:
            doc[name] = value
    return doc


def client_answering(answer: Any, *, status: int = 200, seen: list[str] | None = None) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(str(request.url))
        if isinstance(answer, bytes):
            return httpx.Response(status, content=answer)
        return httpx.Response(status, json=answer)

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_metadata_from_a_real_provider() -> None:
    provider = TestProvider()
    with serve(provider.app) as base_url:
        provider.issuer = base_url
        async with create_idp_client(timeout=5) as http:
            metadata = await fetch_metadata(http, base_url)
    assert metadata.issuer == base_url
    assert metadata.token_endpoint == f"{base_url}/token"
    assert metadata.jwks_uri == f"{base_url}/jwks"
    assert metadata.revocation_endpoint == f"{base_url}/revoke"
    assert metadata.end_session_endpoint == f"{base_url}/end_session"
    assert metadata.userinfo_endpoint is None
    assert metadata.code_challenge_methods_supported == ("S256",)
    assert metadata.backchannel_logout_supported is True
    assert metadata.authorization_response_iss_parameter_supported is True


async def test_defaults_and_well_known_url_of_an_issuer_with_a_path() -> None:
    issuer = "https://idp.example.com/realms/main"
    seen: list[str] = []
    async with client_answering(document(issuer=issuer), seen=seen) as http:
        metadata = await fetch_metadata(http, issuer)
    assert seen == ["https://idp.example.com/realms/main/.well-known/openid-configuration"]
    assert metadata.token_endpoint_auth_methods_supported == ("client_secret_basic",)  # Discovery 3 default
    assert metadata.revocation_endpoint is None
    assert metadata.backchannel_logout_supported is False


async def test_loopback_http_endpoints_are_allowed() -> None:
    issuer = "http://localhost:8080"
    doc = document(issuer=issuer, token_endpoint="http://127.0.0.1:8080/token", jwks_uri="http://[::1]:8080/jwks")
    async with client_answering(doc) as http:
        assert (await fetch_metadata(http, issuer)).jwks_uri == "http://[::1]:8080/jwks"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"issuer": "https://evil.example.com"}, "issuer mismatch: expected 'https://idp.example.com'"),
        ({"issuer": ISSUER + "/"}, "issuer mismatch"),
        ({"issuer": None}, "issuer mismatch"),
        ({"token_endpoint": "http://idp.example.com/token"}, "token_endpoint must be an https URL"),
        ({"jwks_uri": "http://10.0.0.1/jwks"}, "jwks_uri must be an https URL"),
        ({"end_session_endpoint": "http://idp.example.com/logout"}, "end_session_endpoint must be an https URL"),
        ({"authorization_endpoint": "javascript:alert(1)"}, "authorization_endpoint must be an https URL"),
        ({"jwks_uri": None}, "jwks_uri is missing"),
        ({"token_endpoint": 42}, "token_endpoint is not a string"),
    ],
)
async def test_unusable_metadata_is_refused(changes: dict[str, Any], message: str) -> None:
    async with client_answering(document(**changes)) as http:
        with pytest.raises(InvalidProviderMetadata, match=message):
            await fetch_metadata(http, ISSUER)


async def test_http_issuer_for_a_remote_host_is_refused() -> None:
    issuer = "http://idp.example.com"
    async with client_answering(document(issuer=issuer)) as http:
        with pytest.raises(InvalidProviderMetadata, match="issuer must be an https URL"):
            await fetch_metadata(http, issuer)


@pytest.mark.parametrize(
    ("answer", "status", "message"),
    [
        (document(), 500, "answered HTTP 500"),
        (document(), 302, "answered HTTP 302"),
        (b"<html>maintenance</html>", 200, "the answer is not JSON"),
        (b"\xff\xfe", 200, "the answer is not JSON"),
        (["not", "an", "object"], 200, "not a JSON object"),
    ],
)
async def test_garbage_is_idp_unavailable(answer: Any, status: int, message: str) -> None:
    async with client_answering(answer, status=status) as http:
        with pytest.raises(IdPUnavailable, match=message) as info:
            await fetch_metadata(http, ISSUER)
    assert not isinstance(info.value, InvalidProviderMetadata)  # retry later, not a misconfiguration


@pytest.mark.parametrize(
    "failure", [httpx.ConnectTimeout("slow"), httpx.ConnectError("refused"), httpx.RemoteProtocolError("bad")]
)
async def test_transport_failures_are_idp_unavailable_with_cause(failure: httpx.HTTPError) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise failure

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(IdPUnavailable, match="OpenID Provider metadata") as info:
            await fetch_metadata(http, ISSUER)
    assert info.value.__cause__ is failure
