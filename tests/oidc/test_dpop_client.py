"""The token endpoint with ``[oidc] dpop`` (RFC 9449 5, 8): every request carries a fresh proof for the token
endpoint, a Bearer answer fails closed, ``use_dpop_nonce`` earns exactly one retry and only with a valid nonce.
The IdP's answers are scripted (respx): a compliant reference IdP never answers Bearer to a valid proof."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import respx
from joserfc.jwk import ECKey, RSAKey

from bff.config import OIDCSettings, Secret
from bff.errors import ConfigError, IdPUnavailable, OAuthError
from bff.oidc.client import OIDCClient
from bff.oidc.client_auth import ClientAuth
from bff.oidc.dpop import DPoPProver, load_dpop_key
from tests.oidc.test_client import METADATA, REFRESH_TOKEN, SECRET
from tests.support.clock import FakeClock

ISSUER = METADATA.issuer
TOKEN_URL = METADATA.token_endpoint


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def dpop_client(http: httpx.AsyncClient) -> tuple[OIDCClient, DPoPProver]:
    clock = FakeClock(1_800_000_000)
    prover = DPoPProver(ECKey.generate_key("P-256", private=True), clock=clock)
    oidc = OIDCSettings(issuer=ISSUER, client_id="spa-bff", client_secret=Secret(SECRET), dpop=True)
    return OIDCClient(ClientAuth(oidc, METADATA, http, clock=clock, dpop=prover)), prover


def claims_of(request: httpx.Request) -> dict[str, object]:
    payload = request.headers["dpop"].split(".")[1]
    claims: dict[str, object] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def answer(token_type: str = "DPoP", **headers: str) -> httpx.Response:
    body = {"access_token": "AT", "token_type": token_type, "expires_in": 300}
    return httpx.Response(200, json=body, headers=headers)


def nonce_challenge(nonce: str) -> httpx.Response:
    return httpx.Response(400, json={"error": "use_dpop_nonce"}, headers={"DPoP-Nonce": nonce})


async def test_refresh_sends_a_proof_and_keeps_the_token_type(http: httpx.AsyncClient) -> None:
    client, _ = dpop_client(http)
    with respx.mock() as router:
        route = router.post(TOKEN_URL).mock(return_value=answer())
        tokens = await client.refresh(REFRESH_TOKEN)
    assert tokens.token_type == "DPoP"
    claims = claims_of(route.calls.last.request)
    assert claims["htm"] == "POST"
    assert claims["htu"] == TOKEN_URL
    assert "ath" not in claims  # no access token is presented to the token endpoint
    assert "nonce" not in claims


async def test_a_bearer_answer_fails_closed(http: httpx.AsyncClient) -> None:
    client, _ = dpop_client(http)
    with respx.mock() as router:
        router.post(TOKEN_URL).mock(return_value=answer("Bearer"))
        with pytest.raises(OAuthError, match="not DPoP") as info:
            await client.refresh(REFRESH_TOKEN)
    assert not isinstance(info.value, IdPUnavailable)  # a misconfigured IdP, not an outage to wait out
    assert "AT" not in info.value.message


async def test_a_nonce_challenge_earns_one_retry_and_the_nonce_is_kept(http: httpx.AsyncClient) -> None:
    client, prover = dpop_client(http)
    with respx.mock() as router:
        route = router.post(TOKEN_URL).mock(side_effect=[nonce_challenge("n-1"), answer(**{"DPoP-Nonce": "n-2"})])
        await client.refresh(REFRESH_TOKEN)
    first, second = (claims_of(call.request) for call in route.calls)
    assert "nonce" not in first
    assert second["nonce"] == "n-1"
    assert first["jti"] != second["jti"]
    assert prover.nonce_for(TOKEN_URL) == "n-2"  # a nonce sent with a success replaces the old one (RFC 9449 8.2)


@pytest.mark.parametrize("nonce", ['a"b', "a b", "x" * 300, "é"])
async def test_an_invalid_nonce_earns_no_retry(http: httpx.AsyncClient, nonce: str) -> None:
    client, prover = dpop_client(http)
    challenge = httpx.Response(400, json={"error": "use_dpop_nonce"}, headers=[(b"DPoP-Nonce", nonce.encode("utf-8"))])
    with respx.mock() as router:
        route = router.post(TOKEN_URL).mock(return_value=challenge)
        with pytest.raises(OAuthError, match="use_dpop_nonce"):
            await client.refresh(REFRESH_TOKEN)
    assert route.call_count == 1
    assert prover.nonce_for(TOKEN_URL) is None


async def test_a_second_challenge_is_the_answer(http: httpx.AsyncClient) -> None:
    client, _ = dpop_client(http)
    with respx.mock() as router:
        route = router.post(TOKEN_URL).mock(return_value=nonce_challenge("again"))
        with pytest.raises(OAuthError, match="use_dpop_nonce"):
            await client.refresh(REFRESH_TOKEN)
    assert route.call_count == 2  # never a loop


def test_the_key_file_must_hold_an_ec_p256_private_key(tmp_path: Path) -> None:
    cases = {
        "garbage": b"not a key",
        "public": ECKey.generate_key("P-256", private=True).as_pem(private=False),
        "p384": ECKey.generate_key("P-384", private=True).as_pem(private=True),
        "rsa": RSAKey.generate_key(2048, private=True).as_pem(private=True),
    }
    for name, pem in cases.items():
        path = tmp_path / f"{name}.pem"
        path.write_bytes(pem)
        with pytest.raises(ConfigError, match=r"oidc\.dpop_key_file"):
            load_dpop_key(str(path))
    with pytest.raises(ConfigError, match="cannot read"):
        load_dpop_key(str(tmp_path / "missing.pem"))
    good = tmp_path / "good.pem"
    good.write_bytes(ECKey.generate_key("P-256", private=True).as_pem(private=True))
    assert load_dpop_key(str(good)).curve_name == "P-256"
