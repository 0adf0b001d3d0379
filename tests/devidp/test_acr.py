"""The reference IdP's two authentication levels (OpenID Connect Core 2 ``acr``, RFC 9470): a password, or a
password and the demo second factor when a client asks for ``urn:bff:acr:mfa``; ``acr`` and ``auth_time`` in the
ID and access tokens, kept by refreshes; ``max_age`` re-prompts."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import httpx

from bff_devtools.acr import ACR_MFA, ACR_PWD, DEMO_OTP
from tests.support.devidp import FORM, Authorization, IdP, OAuthClient, login_tx


async def claims_of(oauth: OAuthClient, authorization: Authorization) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ID token's and the access token's claims, after the code exchange."""
    answer = await oauth.exchange(authorization)
    assert answer.status_code == 200, answer.text
    tokens = answer.json()
    return await oauth.verify(tokens["id_token"], typ="JWT"), await oauth.verify(tokens["access_token"], typ="at+jwt")


async def submit(oauth: OAuthClient, form: httpx.Response, **fields: str) -> httpx.Response:
    body = urlencode({"tx": login_tx(form), "username": "alice", "password": "wonderland", **fields}).encode()
    return await oauth.browser.request("POST", f"{oauth.idp.url}/login", headers=FORM, content=body)


async def test_a_password_login_is_pwd_and_mfa_needs_the_second_factor(oauth: OAuthClient, idp: IdP) -> None:
    plain = await oauth.authorize()
    assert plain.form is not None
    assert "name=otp" not in plain.form.text
    id_claims, access_claims = await claims_of(oauth, plain)
    assert (id_claims["acr"], id_claims["amr"]) == (ACR_PWD, ["pwd"])
    assert (access_claims["acr"], access_claims["auth_time"]) == (ACR_PWD, id_claims["auth_time"])

    # The password-only IdP session does not satisfy mfa: the form again, with the second factor.
    url, verifier, state, nonce = oauth.authorize_url(acr_values=f"urn:other {ACR_MFA}")
    form = await oauth.browser.request("GET", url)
    assert form.status_code == 200
    assert "name=otp" in form.text
    assert DEMO_OTP in form.text  # demo mode shows it
    wrong = await submit(oauth, form, otp="000000")
    assert wrong.status_code == 401
    assert "Wrong one-time code" in wrong.text
    missing = await submit(oauth, wrong)
    assert missing.status_code == 401
    redirect = await submit(oauth, missing, otp=DEMO_OTP)
    assert redirect.status_code == 302
    stepped = Authorization(redirect, verifier, state, nonce)
    id_claims, access_claims = await claims_of(oauth, stepped)
    assert (id_claims["acr"], id_claims["amr"]) == (ACR_MFA, ["pwd", "otp"])
    assert access_claims["acr"] == ACR_MFA

    # Now the session has it: single sign-on for mfa, and for pwd (a stronger level satisfies a weaker one).
    for acr_values in (ACR_MFA, ACR_PWD):
        sso = await oauth.authorize(acr_values=acr_values)
        assert sso.form is None
        assert (await claims_of(oauth, sso))[0]["acr"] == ACR_MFA


async def test_refreshed_tokens_keep_the_level(oauth: OAuthClient) -> None:
    url, verifier, state, nonce = oauth.authorize_url(acr_values=ACR_MFA)
    form = await oauth.browser.request("GET", url)
    authorization = Authorization(await submit(oauth, form, otp=DEMO_OTP), verifier, state, nonce)
    tokens = (await oauth.exchange(authorization)).json()
    refreshed = (await oauth.refresh(tokens["refresh_token"])).json()
    assert (await oauth.verify(refreshed["access_token"], typ="at+jwt"))["acr"] == ACR_MFA
    assert (await oauth.verify(refreshed["id_token"], typ="JWT"))["acr"] == ACR_MFA


async def test_max_age_zero_prompts_again(oauth: OAuthClient, idp: IdP) -> None:
    await oauth.authorize()
    assert (await oauth.authorize()).form is None  # single sign-on
    assert (await oauth.authorize(max_age="0")).form is not None  # Core 3.1.2.1: like prompt=login
    discovery = (await oauth.http.get(f"{idp.url}/.well-known/openid-configuration")).json()
    assert discovery["acr_values_supported"] == [ACR_PWD, ACR_MFA]
    assert "acr" in discovery["claims_supported"]
