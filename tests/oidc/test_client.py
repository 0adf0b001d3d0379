"""OIDCClient: happy paths against the real TestProvider over HTTP; hard-to-provoke answers with respx."""

from __future__ import annotations

import base64
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import httpx
import pytest
import respx
from joserfc.jwk import ECKey, KeySet, RSAKey

from bff.config import OIDCSettings, Secret
from bff.errors import (
    ConfigError,
    IdPUnavailable,
    InvalidGrant,
    InvalidIdToken,
    OAuthError,
    TokenExchangeDenied,
    TokenExchangeRefused,
)
from bff.idp_http import create_idp_client
from bff.models import TokenSet
from bff.oidc.authorization import AuthorizationRequests
from bff.oidc.client import OIDCClient
from bff.oidc.client_auth import ClientAuth
from bff.oidc.discovery import ProviderMetadata, fetch_metadata
from bff.oidc.id_token import validate_id_token
from bff.oidc.jwks import JwksCache, TokenSource
from bff.oidc.pkce import new_code_verifier, new_state, s256_challenge
from tests.support.clock import FakeClock
from tests.support.oidc_provider import TestProvider, running

REDIRECT_URI = "https://app.example.com/bff/callback"
#: Every character that breaks a naive Basic header: ':' splits it, '%' and '+' are decoded by the IdP.
AWKWARD_SECRET = "p:a%2Bss+w rd/ü-0123456789abcdefghijklmnopqrstuv"
# For the unit tests (respx) that need no running provider.
ISSUER = "https://idp.example.com"
METADATA = ProviderMetadata(
    issuer=ISSUER, authorization_endpoint=f"{ISSUER}/authorize?tenant=acme", token_endpoint=f"{ISSUER}/token",
    jwks_uri=f"{ISSUER}/jwks", revocation_endpoint=f"{ISSUER}/revoke", end_session_endpoint=f"{ISSUER}/logout?x=1",
)  # fmt: skip
SECRET = "unit-test-client-secret-0123456789abcdef"
REFRESH_TOKEN = "RT-very-secret-refresh-token-value"


@pytest.fixture
def clock() -> FakeClock:
    # The provider runs on real time, so the client's clock starts there (assertions and expiries must agree).
    return FakeClock(time.time())


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with create_idp_client(timeout=5) as client:
        yield client


async def make_client(provider: TestProvider, http: httpx.AsyncClient, clock: FakeClock, **settings: Any) -> OIDCClient:
    secret = Secret(provider.client_secret) if provider.client_secret else None
    oidc = OIDCSettings(issuer=provider.issuer, client_id=provider.client_id, client_secret=secret, **settings)
    return OIDCClient(ClientAuth(oidc, await fetch_metadata(http, provider.issuer), http, clock=clock))


def plain_requests(client: OIDCClient) -> AuthorizationRequests:
    """A login's authorization request as bff sends it to an IdP without PAR or signed request objects."""
    auth = client.auth
    return AuthorizationRequests(auth.settings, auth.metadata.authorization_endpoint, par=None, signer=None)


async def log_in(client: OIDCClient, http: httpx.AsyncClient, *, verifier: str | None = None) -> TokenSet:
    """Run the authorization request against the provider and exchange the code, as the callback would."""
    code_verifier, state = new_code_verifier(), new_state()
    url = await plain_requests(client).url(
        state=state, nonce="n-1", code_challenge=s256_challenge(code_verifier), redirect_uri=REDIRECT_URI
    )
    answer = await http.get(url)
    assert answer.status_code == 302
    params = dict(parse_qsl(urlsplit(answer.headers["location"]).query))
    assert params["state"] == state
    assert params["iss"] == client.metadata.issuer  # RFC 9207
    return await client.exchange_code(params["code"], verifier or code_verifier, REDIRECT_URI)


# --- against the real provider ----------------------------------------------------------------------------------


async def test_code_exchange_with_pkce(idp: TestProvider, http: httpx.AsyncClient, clock: FakeClock) -> None:
    client = await make_client(idp, http, clock)
    tokens = await log_in(client, http)
    assert tokens.expires_at == clock.now + 300
    assert tokens.refresh_token
    assert tokens.id_token
    jwks = JwksCache(http, client.metadata.jwks_uri, clock=clock)
    claims = await validate_id_token(
        tokens.id_token, jwks=jwks, issuer=idp.issuer, client_id="spa-bff", nonce="n-1", algorithms=("RS256",),
        clock=clock, leeway=60, access_token=tokens.access_token, source=TokenSource.TOKEN_ENDPOINT,
    )  # fmt: skip
    assert claims["sub"] == "alice-0001"
    request = idp.token_requests[-1]
    assert request["client_auth"] == "client_secret_basic"
    assert "client_secret" not in request
    assert idp.authorize_requests[-1]["code_challenge_method"] == "S256"


async def test_wrong_code_verifier_is_invalid_grant(
    idp: TestProvider, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    client = await make_client(idp, http, clock)
    with pytest.raises(InvalidGrant):
        await log_in(client, http, verifier=new_code_verifier())


async def test_refresh_rotation_and_reuse_detection(
    idp: TestProvider, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    client = await make_client(idp, http, clock)
    first = await log_in(client, http)
    assert first.refresh_token is not None
    second = await client.refresh(first.refresh_token)
    assert second.refresh_token not in (None, first.refresh_token)
    assert second.access_token != first.access_token
    with pytest.raises(InvalidGrant) as info:  # replaying the spent token revokes the family...
        await client.refresh(first.refresh_token)
    assert info.value.oauth_error == "invalid_grant"
    assert first.refresh_token not in str(info.value)
    with pytest.raises(InvalidGrant):  # ...including the token that was still current
        await client.refresh(str(second.refresh_token))
    assert idp.refresh_calls == 3


async def test_refresh_without_rotation_returns_no_refresh_token(http: httpx.AsyncClient, clock: FakeClock) -> None:
    with running(TestProvider(rotate_refresh_tokens=False)) as provider:
        client = await make_client(provider, http, clock)
        tokens = await log_in(client, http)
        again = await client.refresh(str(tokens.refresh_token), scopes=("openid",))
        assert again.refresh_token is None
        assert again.scope == "openid"
        assert (await client.refresh(str(tokens.refresh_token))).access_token


async def test_revoke_ends_the_refresh_token(idp: TestProvider, http: httpx.AsyncClient, clock: FakeClock) -> None:
    client = await make_client(idp, http, clock)
    tokens = await log_in(client, http)
    await client.revoke(str(tokens.refresh_token))
    assert idp.revoked_tokens == [tokens.refresh_token]
    with pytest.raises(InvalidGrant):
        await client.refresh(str(tokens.refresh_token))


async def test_revoke_without_endpoint_is_a_no_op(http: httpx.AsyncClient, clock: FakeClock) -> None:
    provider = TestProvider()
    provider.omit_revocation_endpoint = True
    with running(provider):
        client = await make_client(provider, http, clock)
        assert client.metadata.revocation_endpoint is None
        await client.revoke("some-token")
    assert provider.revoked_tokens == []


async def test_failed_revocation_raises(idp: TestProvider, http: httpx.AsyncClient, clock: FakeClock) -> None:
    idp.revocation_fails = True
    client = await make_client(idp, http, clock)
    with pytest.raises(IdPUnavailable, match="revocation endpoint: HTTP 503"):
        await client.revoke("some-token")


async def test_client_credentials(idp: TestProvider, http: httpx.AsyncClient, clock: FakeClock) -> None:
    client = await make_client(idp, http, clock, token_endpoint_auth_method="client_secret_post")
    tokens = await client.client_credentials(scopes=("orders.read", "orders.write"), resource="https://api.test")
    assert tokens.refresh_token is None
    assert tokens.id_token is None
    request = idp.token_requests[-1]
    assert request["grant_type"] == "client_credentials"
    assert request["scope"] == "orders.read orders.write"
    assert request["resource"] == "https://api.test"
    assert request["client_auth"] == "client_secret_post"
    assert request["client_secret"] == idp.client_secret


async def test_client_secret_basic_form_encodes_before_base64(http: httpx.AsyncClient, clock: FakeClock) -> None:
    with running(TestProvider(client_secret=AWKWARD_SECRET)) as provider:
        client = await make_client(provider, http, clock)
        assert (await client.client_credentials()).access_token
        # The provider really decodes as RFC 6749 2.3.1 says: a naive header (no form-encoding) is refused.
        naive = base64.b64encode(f"spa-bff:{AWKWARD_SECRET}".encode()).decode()
        form = {"grant_type": "client_credentials"}
        answer = await http.post(f"{provider.issuer}/token", data=form, headers={"Authorization": f"Basic {naive}"})
        assert answer.json()["error"] == "invalid_client"


async def test_public_client_sends_only_its_id(http: httpx.AsyncClient, clock: FakeClock) -> None:
    with running(TestProvider(client_secret=None)) as provider:
        client = await make_client(provider, http, clock, token_endpoint_auth_method="none")
        await log_in(client, http)
        assert provider.token_requests[-1]["client_auth"] == "none"
        assert provider.token_requests[-1]["client_id"] == "spa-bff"


@pytest.mark.parametrize("key_type", ["EC", "RSA"])
async def test_private_key_jwt(http: httpx.AsyncClient, clock: FakeClock, tmp_path: Path, key_type: str) -> None:
    key = ECKey.generate_key("P-256") if key_type == "EC" else RSAKey.generate_key(2048)
    pem = tmp_path / "client.pem"
    pem.write_bytes(key.as_pem(private=True))
    public = KeySet([type(key).import_key(key.as_dict(private=False))])
    wrong = KeySet([ECKey.generate_key("P-256", private=False)])
    for registered, works in ((public, True), (wrong, False)):
        with running(TestProvider(client_secret=None, client_jwks=registered)) as provider:
            client = await make_client(
                provider, http, clock, token_endpoint_auth_method="private_key_jwt", private_key_file=str(pem)
            )
            if works:
                await client.client_credentials()
                assert provider.token_requests[-1]["client_auth"] == "private_key_jwt"
            else:
                with pytest.raises(OAuthError) as info:
                    await client.client_credentials()
                assert type(info.value) is OAuthError
                assert info.value.oauth_error == "invalid_client"


async def test_private_key_jwt_needs_a_private_key(tmp_path: Path) -> None:
    pem = tmp_path / "public.pem"
    pem.write_bytes(ECKey.generate_key("P-256").as_pem(private=False))
    oidc = OIDCSettings(
        issuer=ISSUER, client_id="c", token_endpoint_auth_method="private_key_jwt", private_key_file=str(pem)
    )
    async with create_idp_client() as http:
        with pytest.raises(ConfigError, match="not a PEM RSA or EC"):
            ClientAuth(oidc, METADATA, http, clock=time.time)


@pytest.mark.parametrize(("knob", "value", "error"), [("token_error", "invalid_client", OAuthError),
                                                      ("token_error", "invalid_grant", InvalidGrant),
                                                      ("fail_token_endpoint_with", 500, IdPUnavailable)])  # fmt: skip
async def test_provider_errors_map_to_bff_errors(
    idp: TestProvider, http: httpx.AsyncClient, clock: FakeClock, knob: str, value: object, error: type[OAuthError]
) -> None:
    client = await make_client(idp, http, clock)
    setattr(idp, knob, value)
    with pytest.raises(OAuthError) as info:
        await client.client_credentials()
    assert type(info.value) is error


async def test_authorize_error_comes_back_to_the_redirect_uri(
    idp: TestProvider, http: httpx.AsyncClient, clock: FakeClock
) -> None:
    idp.authorize_error = "access_denied"
    client = await make_client(idp, http, clock)
    url = await plain_requests(client).url(
        state="s", nonce="n", code_challenge=s256_challenge("v" * 43), redirect_uri=REDIRECT_URI
    )
    location = (await http.get(url)).headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    assert parse_qs(urlsplit(location).query) == {"error": ["access_denied"], "state": ["s"], "iss": [idp.issuer]}


# --- URLs -------------------------------------------------------------------------------------------------------


def unit_client(http: httpx.AsyncClient, clock: FakeClock, **settings: Any) -> OIDCClient:
    oidc = OIDCSettings(issuer=ISSUER, client_id="spa-bff", client_secret=Secret(SECRET), **settings)
    return OIDCClient(ClientAuth(oidc, METADATA, http, clock=clock))


async def test_authorization_url_keeps_the_endpoint_query_and_protects_protocol_parameters(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    client = unit_client(http, clock, extra_auth_params={"prompt": "login"})
    url = await plain_requests(client).url(
        state="st", nonce="no", code_challenge="ch", redirect_uri=REDIRECT_URI, extra={"login_hint": "a", "state": "x"}
    )
    assert url.startswith(f"{ISSUER}/authorize?")
    assert parse_qs(urlsplit(url).query) == {
        "tenant": ["acme"], "prompt": ["login"], "login_hint": ["a"], "response_type": ["code"],
        "client_id": ["spa-bff"], "redirect_uri": [REDIRECT_URI], "scope": ["openid profile email offline_access"],
        "state": ["st"], "nonce": ["no"], "code_challenge": ["ch"], "code_challenge_method": ["S256"],
    }  # fmt: skip


async def test_end_session_url(http: httpx.AsyncClient, clock: FakeClock) -> None:
    client = unit_client(http, clock)
    url = client.end_session_url(id_token_hint="idt", post_logout_redirect_uri="https://app.example.com/", state="s")
    assert url is not None
    assert url.startswith(f"{ISSUER}/logout?")
    assert parse_qs(urlsplit(url).query) == {
        "x": ["1"], "client_id": ["spa-bff"], "id_token_hint": ["idt"],
        "post_logout_redirect_uri": ["https://app.example.com/"], "state": ["s"],
    }  # fmt: skip
    oidc = OIDCSettings(issuer=ISSUER, client_id="spa-bff", client_secret=Secret(SECRET))
    no_endpoint = OIDCClient(
        ClientAuth(oidc, dataclasses.replace(METADATA, end_session_endpoint=None), http, clock=clock)
    )
    assert no_endpoint.end_session_url(id_token_hint="idt", post_logout_redirect_uri=None) is None


# --- answers that are hard to provoke (respx) -------------------------------------------------------------------


def ok(**fields: Any) -> httpx.Response:
    return httpx.Response(200, json={"access_token": "AT", "token_type": "Bearer", "expires_in": 300, **fields})


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (httpx.Response(200, content=b"{not json"), IdPUnavailable),
        (httpx.Response(502, html="<html><body>Bad Gateway</body></html>"), IdPUnavailable),
        (httpx.Response(429, json={"error": "slow_down"}), IdPUnavailable),
        (httpx.Response(302, headers={"Location": "https://elsewhere.test/"}), IdPUnavailable),
        (httpx.Response(200, json={"token_type": "Bearer"}), IdPUnavailable),
        (ok(access_token=12345), IdPUnavailable),
        (ok(access_token=""), IdPUnavailable),
        (ok(expires_in="soon"), IdPUnavailable),
        (ok(expires_in=True), IdPUnavailable),
        (ok(token_type="mac"), IdPUnavailable),
        (ok(token_type=None), IdPUnavailable),
        (ok(refresh_token=["RT"]), IdPUnavailable),
        (ok(id_token=7), IdPUnavailable),
        (httpx.Response(200, json=["AT"]), IdPUnavailable),
        (httpx.Response(400, text="Bad Request"), IdPUnavailable),
        (httpx.Response(400, json={"message": "no"}), IdPUnavailable),
        (httpx.Response(400, json={"error": "temporarily_unavailable"}), IdPUnavailable),
        (httpx.Response(400, json={"error": "invalid_grant", "error_description": f"{REFRESH_TOKEN} expired"}),
         InvalidGrant),
        (httpx.Response(401, json={"error": "invalid_grant"}), InvalidGrant),
        (httpx.Response(401, json={"error": "invalid_client", "error_description": SECRET}), OAuthError),
        (httpx.Response(400, json={"error": "invalid_scope"}), OAuthError),
        (httpx.Response(400, json={"error": "unauthorized_client"}), OAuthError),
    ],
)  # fmt: skip
async def test_token_answers_map_to_errors(
    http: httpx.AsyncClient, clock: FakeClock, answer: httpx.Response, error: type[OAuthError]
) -> None:
    with respx.mock(assert_all_called=True) as router:
        router.post(f"{ISSUER}/token").mock(return_value=answer)
        with pytest.raises(OAuthError) as info:
            await unit_client(http, clock).refresh(REFRESH_TOKEN)
    assert type(info.value) is error
    assert REFRESH_TOKEN not in str(info.value)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize("failure", [httpx.ReadTimeout("slow"), httpx.ConnectError("refused")])
async def test_transport_failures_are_idp_unavailable(
    http: httpx.AsyncClient, clock: FakeClock, failure: httpx.HTTPError
) -> None:
    with respx.mock() as router:
        router.post(f"{ISSUER}/token").mock(side_effect=failure)
        with pytest.raises(IdPUnavailable) as info:
            await unit_client(http, clock).client_credentials()
    assert info.value.__cause__ is failure


async def test_lenient_but_well_formed_answers(http: httpx.AsyncClient, clock: FakeClock) -> None:
    answer = ok(token_type="bearer", expires_in="3600", refresh_token="RT2", refresh_expires_in=1800, scope="a b")
    with respx.mock() as router:
        route = router.post(f"{ISSUER}/token").mock(return_value=answer)
        tokens = await unit_client(http, clock).refresh(REFRESH_TOKEN, scopes=("a", "b"), resource="https://api.test")
    assert tokens == TokenSet(
        access_token="AT", expires_at=clock.now + 3600, refresh_token="RT2", refresh_expires_at=clock.now + 1800,
        scope="a b",
    )  # fmt: skip
    sent = dict(parse_qsl(route.calls.last.request.content.decode()))
    assert sent == {
        "grant_type": "refresh_token",
        "refresh_token": REFRESH_TOKEN,
        "scope": "a b",
        "resource": "https://api.test",
    }


async def test_code_exchange_without_id_token_fails_the_login(http: httpx.AsyncClient, clock: FakeClock) -> None:
    with respx.mock() as router:
        router.post(f"{ISSUER}/token").mock(return_value=ok(refresh_token="RT"))
        with pytest.raises(InvalidIdToken, match="without an id_token"):
            await unit_client(http, clock).exchange_code("the-code", new_code_verifier(), REDIRECT_URI)


# --- token exchange (RFC 8693) ----------------------------------------------------------------------------------

SUBJECT_TOKEN = "AT-the-users-very-secret-access-token"
ISSUED_AT = "urn:ietf:params:oauth:token-type:access_token"


async def test_token_exchange_sends_the_rfc_8693_form_and_drops_a_refresh_token(
    http: httpx.AsyncClient, clock: FakeClock
) -> None:
    with respx.mock(assert_all_called=True) as router:
        route = router.post(f"{ISSUER}/token").mock(
            return_value=ok(issued_token_type=ISSUED_AT, refresh_token="RT-not-kept", scope="orders:read")
        )
        tokens = await unit_client(http, clock).token_exchange(
            SUBJECT_TOKEN, audience="orders-api", resource="https://orders.example.net", scope="orders:read"
        )
    form = dict(parse_qsl(route.calls.last.request.content.decode()))
    assert form == {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": SUBJECT_TOKEN,
        "subject_token_type": ISSUED_AT,
        "requested_token_type": ISSUED_AT,
        "audience": "orders-api",
        "resource": "https://orders.example.net",
        "scope": "orders:read",
    }
    assert tokens == TokenSet(access_token="AT", expires_at=clock() + 300, scope="orders:read")


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (httpx.Response(400, json={"error": "invalid_target"}), TokenExchangeRefused),
        (httpx.Response(400, json={"error": "unauthorized_client"}), TokenExchangeRefused),
        (httpx.Response(400, json={"error": "invalid_request", "error_description": SUBJECT_TOKEN}),
         TokenExchangeRefused),
        (httpx.Response(400, json={"error": "invalid_scope"}), TokenExchangeRefused),
        (httpx.Response(401, json={"error": "invalid_client"}), TokenExchangeRefused),
        (httpx.Response(400, json={"error": "invalid_grant"}), TokenExchangeDenied),
        (httpx.Response(400, json={"error": "invalid_token"}), TokenExchangeDenied),
        (httpx.Response(503, text="down"), IdPUnavailable),
        (httpx.Response(400, json={"error": "temporarily_unavailable"}), IdPUnavailable),
        (ok(), IdPUnavailable),  # no issued_token_type (RFC 8693 2.2.1: required)
        (ok(issued_token_type="urn:ietf:params:oauth:token-type:id_token"), IdPUnavailable),
        (ok(issued_token_type=ISSUED_AT, token_type="N_A"), IdPUnavailable),
    ],
)  # fmt: skip
async def test_token_exchange_refusals_never_end_the_session(
    http: httpx.AsyncClient, clock: FakeClock, answer: httpx.Response, error: type[OAuthError]
) -> None:
    with respx.mock(assert_all_called=True) as router:
        router.post(f"{ISSUER}/token").mock(return_value=answer)
        with pytest.raises(OAuthError) as info:
            await unit_client(http, clock).token_exchange(SUBJECT_TOKEN, audience="orders-api")
    assert type(info.value) is error
    assert not isinstance(info.value, InvalidGrant)
    assert error is IdPUnavailable or info.value.error in ("token_exchange_refused", "token_exchange_denied")
    assert SUBJECT_TOKEN not in str(info.value)
