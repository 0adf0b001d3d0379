"""The reference IdP's token exchange grant (RFC 8693): impersonation for an audience on the client's allow-list,
the subject an unexpired, unrevoked access token the IdP issued to the same client."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from bff.errors import ConfigError
from bff_devtools.devidp import ClientRegistration, DevIdPSettings
from bff_devtools.devidp.settings import TOKEN_EXCHANGE
from tests.support.browser import Browser
from tests.support.devidp import CLIENT_ID, IdP, OAuthClient, client, running_devidp

ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
OTHER_ID, OTHER_SECRET = "other-client", "other-client-secret-0123456789"
PLAIN_ID, PLAIN_SECRET = "plain-client", "plain-client-secret-0123456789"


def exchanging(registration: ClientRegistration, *audiences: str) -> ClientRegistration:
    return dataclasses.replace(
        registration,
        grant_types=(*registration.grant_types, TOKEN_EXCHANGE),
        exchange_audiences=audiences,
    )


@pytest.fixture
def idp(tmp_path: Path) -> Iterator[IdP]:
    """``spa-bff`` and ``other-client`` may exchange for ``orders-api``; ``plain-client`` may not exchange at all."""
    clients = (
        exchanging(client(), "orders-api"),
        exchanging(client(OTHER_ID, OTHER_SECRET), "orders-api"),
        client(PLAIN_ID, PLAIN_SECRET),
    )
    with running_devidp(tmp_path / "keys", clients) as running:
        yield running


@pytest.fixture
async def oauth(idp: IdP, browser: Browser) -> AsyncIterator[OAuthClient]:
    c = OAuthClient(idp, browser)
    yield c
    await c.aclose()


def form(subject_token: str, **extra: str) -> dict[str, str]:
    return {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": subject_token,
        "subject_token_type": ACCESS_TOKEN,
        "requested_token_type": ACCESS_TOKEN,
        "audience": "orders-api",
        **extra,
    }


def test_discovery_advertises_the_grant(idp: IdP) -> None:
    metadata = httpx.get(f"{idp.url}/.well-known/openid-configuration").json()
    assert TOKEN_EXCHANGE in metadata["grant_types_supported"]


async def test_an_exchanged_token_is_the_users_for_the_requested_audience(oauth: OAuthClient) -> None:
    tokens = await oauth.login()
    response = await oauth.token(form(tokens["access_token"], scope="orders:read"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["issued_token_type"] == ACCESS_TOKEN
    assert body["token_type"] == "Bearer"
    assert "refresh_token" not in body
    claims = await oauth.verify(body["access_token"], typ="at+jwt")
    subject = await oauth.verify(tokens["access_token"], typ="at+jwt")
    assert claims["aud"] == "orders-api"
    assert claims["sub"] == subject["sub"] == "alice-0001"
    assert claims["scope"] == "orders:read"
    assert claims["client_id"] == CLIENT_ID
    # Without scope: the subject token's.
    plain = (await oauth.token(form(tokens["access_token"]))).json()
    assert (await oauth.verify(plain["access_token"], typ="at+jwt"))["scope"] == subject["scope"]


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"audience": "billing-api"}, "invalid_target"),
        ({"audience": None}, "invalid_target"),
        ({"resource": "https://orders.example.net"}, "invalid_target"),
        ({"subject_token_type": "urn:ietf:params:oauth:token-type:id_token"}, "invalid_request"),
        ({"requested_token_type": "urn:ietf:params:oauth:token-type:refresh_token"}, "invalid_request"),
        ({"actor_token": "x", "actor_token_type": ACCESS_TOKEN}, "invalid_request"),
        ({"scope": "orders:write"}, "invalid_scope"),
        ({"subject_token": None}, "invalid_request"),
        ({"subject_token": "not-a-token"}, "invalid_request"),
    ],
)
async def test_refusals(oauth: OAuthClient, change: dict[str, str | None], error: str) -> None:
    """``None`` leaves the parameter out."""
    tokens = await oauth.login()
    request = {**form(tokens["access_token"]), **change}
    response = await oauth.token({k: v for k, v in request.items() if v is not None})
    assert response.status_code in (400, 401), response.text
    assert response.json()["error"] == error


async def test_a_revoked_subject_token_is_refused(oauth: OAuthClient) -> None:
    tokens = await oauth.login()
    await oauth.revoke(tokens["access_token"], "access_token")
    response = await oauth.token(form(tokens["access_token"]))
    assert response.json()["error"] == "invalid_request"


async def test_only_clients_with_the_grant_may_exchange_and_only_their_own_tokens(
    idp: IdP, oauth: OAuthClient, browser: Browser
) -> None:
    tokens = await oauth.login()
    plain = OAuthClient(idp, browser, client_id=PLAIN_ID, secret=PLAIN_SECRET)
    other = OAuthClient(idp, browser, client_id=OTHER_ID, secret=OTHER_SECRET)
    try:
        assert (await plain.token(form(tokens["access_token"]))).json()["error"] == "unauthorized_client"
        # A token issued to spa-bff is not another client's to exchange.
        assert (await other.token(form(tokens["access_token"]))).json()["error"] == "invalid_request"
    finally:
        await plain.aclose()
        await other.aclose()


def test_settings_refuse_a_public_exchanging_client_and_audiences_without_the_grant(tmp_path: Path) -> None:
    public = exchanging(client("pub", None), "orders-api")
    stray = dataclasses.replace(client(), exchange_audiences=("orders-api",))
    with pytest.raises(ConfigError) as info:
        DevIdPSettings(
            issuer="http://127.0.0.1:9", data_dir=tmp_path, clients=(public, dataclasses.replace(stray, client_id="s"))
        )
    assert any("a public client cannot use the token exchange grant" in p for p in info.value.problems)
    assert any(
        "exchange_audiences: the client does not have the token exchange grant" in p for p in info.value.problems
    )
