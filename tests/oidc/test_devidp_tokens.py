"""bff's ID token validation against tokens the reference IdP really issues (authlib computes their ``at_hash``):
the code exchange's and a refresh's ID tokens bind their own access token and no other, in both signing
algorithms the IdP offers."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from bff.errors import InvalidIdToken
from bff.oidc.id_token import validate_id_token
from bff.oidc.jwks import JwksCache, TokenSource
from bff.types import system_clock
from tests.support.browser import Browser
from tests.support.devidp import CLIENT_ID, OAuthClient, running_devidp, unverified


async def validate(token: str, jwks: JwksCache, issuer: str, access_token: str, nonce: str | None) -> None:
    await validate_id_token(
        token, jwks=jwks, issuer=issuer, client_id=CLIENT_ID, nonce=nonce, access_token=access_token,
        algorithms=("ES256", "RS256"), clock=system_clock, leeway=60, source=TokenSource.TOKEN_ENDPOINT,
    )  # fmt: skip


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
async def test_the_reference_idps_at_hash_binds_its_access_token(tmp_path: Path, browser: Browser, alg: str) -> None:
    with running_devidp(tmp_path, alg=alg) as idp:
        oauth = OAuthClient(idp, browser)
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                jwks = JwksCache(http, f"{idp.url}/jwks", clock=time.time)
                authorization = await oauth.authorize()
                response = await oauth.exchange(authorization)
                assert response.status_code == 200, response.text
                login = response.json()
                refreshed = (await oauth.refresh(login["refresh_token"])).json()
                for answer, nonce in ((login, authorization.nonce), (refreshed, None)):
                    header, claims = unverified(answer["id_token"])
                    assert header["alg"] == alg
                    assert "at_hash" in claims  # what makes this test about at_hash at all
                    await validate(answer["id_token"], jwks, idp.url, answer["access_token"], nonce)
                # Each ID token binds its own access token: swapped, both are refused.
                for answer, other, nonce in ((login, refreshed, authorization.nonce), (refreshed, login, None)):
                    with pytest.raises(InvalidIdToken, match="at_hash does not match the access token"):
                        await validate(answer["id_token"], jwks, idp.url, other["access_token"], nonce)
        finally:
            await oauth.aclose()
