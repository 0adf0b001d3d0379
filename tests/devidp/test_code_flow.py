"""The authorization code flow with PKCE against the development IdP over HTTP: the login form, the redirect
(code, state, RFC 9207 iss), the code exchange, the tokens, and every way a request is refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from bff_devtools.devidp.pages import BANNER
from tests.support.browser import Browser
from tests.support.devidp import (
    CLIENT_ID,
    FORM,
    REDIRECT_URI,
    IdP,
    OAuthClient,
    client,
    login_tx,
    pkce_pair,
    query_of,
    running_devidp,
    set_cookie,
    unverified,
)

ACCESS_TOKEN_CLAIMS = {"iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope", "role", "acr", "auth_time"}


async def test_login_form_then_redirect_with_code_state_and_iss(oauth: OAuthClient, idp: IdP) -> None:
    url, verifier, state, _ = oauth.authorize_url()
    form = await oauth.browser.request("GET", url)
    assert form.status_code == 200
    assert BANNER in form.text
    assert "wonderland" in form.text  # demo mode shows the demo passwords
    assert form.headers["x-frame-options"] == "DENY"
    assert form.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in form.headers["content-security-policy"]
    binding = set_cookie(form, "devidp_browser")
    assert "HttpOnly" in binding
    assert "SameSite=lax" in binding

    redirect = await oauth.submit_login(form, "alice", "wonderland")
    assert redirect.status_code == 302
    location = redirect.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    params = query_of(location)
    assert set(params) == {"code", "state", "iss"}
    assert params["state"] == state
    assert params["iss"] == idp.settings.issuer  # RFC 9207
    session = set_cookie(redirect, "devidp_session")
    assert "HttpOnly" in session
    assert "SameSite=lax" in session
    assert "Secure" not in session  # an http issuer: a browser would drop a Secure cookie on http://localhost

    form_body = {"grant_type": "authorization_code", "code": params["code"], "redirect_uri": REDIRECT_URI}
    tokens = await oauth.token({**form_body, "code_verifier": verifier})
    assert tokens.status_code == 200, tokens.text
    assert tokens.headers["cache-control"] == "no-store"
    body = tokens.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["scope"] == "openid profile email offline_access"
    assert len(body["refresh_token"]) >= 43  # 256 bits, base64url
    assert body["refresh_token"].count(".") == 0  # opaque, not a JWT


async def test_id_token(oauth: OAuthClient, idp: IdP) -> None:
    authorization = await oauth.authorize()
    id_token = (await oauth.exchange(authorization)).json()["id_token"]
    claims = await oauth.verify(id_token, typ="JWT")
    assert claims["iss"] == idp.settings.issuer
    assert claims["aud"] == CLIENT_ID
    assert claims["sub"] == "alice-0001"
    assert claims["nonce"] == authorization.nonce
    assert claims["exp"] - claims["iat"] == 300
    assert abs(claims["auth_time"] - time.time()) < 30
    assert len(claims["sid"]) >= 16
    assert claims["name"] == "Alice Example"
    assert claims["email"] == "alice@example.com"
    assert claims["role"] == "admin"


async def test_scopes_decide_the_id_token_claims(oauth: OAuthClient) -> None:
    authorization = await oauth.authorize(scope="openid")
    claims = await oauth.verify((await oauth.exchange(authorization)).json()["id_token"], typ="JWT")
    assert claims["sub"] == "alice-0001"
    assert not {"name", "email", "role"} & set(claims)


async def test_access_token_is_a_small_rfc9068_jwt(oauth: OAuthClient, idp: IdP) -> None:
    token = (await oauth.login())["access_token"]
    header, _ = unverified(token)
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "ES256"
    claims = await oauth.verify(token, typ="at+jwt")  # with the JWKS's public key only
    assert set(claims) == ACCESS_TOKEN_CLAIMS
    assert claims["iss"] == idp.settings.issuer
    assert claims["sub"] == "alice-0001"
    assert claims["aud"] == "demo-api"
    assert claims["client_id"] == CLIENT_ID
    assert claims["role"] == "admin"
    assert claims["exp"] - claims["iat"] == 900
    assert len(token) < 1024
    assert "alice@example.com" not in str(claims)
    assert "Alice" not in str(claims)


async def test_another_key_does_not_verify_the_access_token(oauth: OAuthClient) -> None:
    token = (await oauth.login())["access_token"]
    stranger = KeySet([ECKey.generate_key("P-256", parameters={"kid": unverified(token)[0]["kid"]})])
    with pytest.raises(Exception, match="signature"):
        jwt.decode(token, stranger, algorithms=["ES256"])


async def test_rs256_when_selected(tmp_path: Path, browser: Browser) -> None:
    with running_devidp(tmp_path, alg="RS256") as idp:
        oauth = OAuthClient(idp, browser)
        try:
            tokens = await oauth.login()
            jwks = (await oauth.http.get(f"{idp.url}/jwks")).json()
            discovery = (await oauth.http.get(f"{idp.url}/.well-known/openid-configuration")).json()
            for name in ("access_token", "id_token"):
                assert unverified(tokens[name])[0]["alg"] == "RS256"
            await oauth.verify(tokens["access_token"], typ="at+jwt")
        finally:
            await oauth.aclose()
    assert [key["kty"] for key in jwks["keys"]] == ["RSA"]
    assert discovery["id_token_signing_alg_values_supported"] == ["RS256"]


async def test_the_authorization_request_may_be_posted(oauth: OAuthClient, idp: IdP) -> None:
    url, _, state, _ = oauth.authorize_url()
    form = await oauth.browser.request("POST", f"{idp.url}/authorize", headers=FORM, content=url.split("?")[1].encode())
    assert form.status_code == 200
    redirect = await oauth.submit_login(form, "alice", "wonderland")
    assert query_of(redirect.headers["location"])["state"] == state


async def test_an_issuer_under_localhost(tmp_path: Path, browser: Browser) -> None:
    """``http://idp.localhost:9000`` (the compose demo's issuer) is loopback for bff; authlib must accept it too."""
    with running_devidp(tmp_path, issuer="http://idp.localhost:9000") as idp:
        oauth = OAuthClient(idp, browser)
        try:
            authorization = await oauth.authorize()
            tokens = (await oauth.exchange(authorization)).json()
        finally:
            await oauth.aclose()
    assert authorization.params["iss"] == "http://idp.localhost:9000"
    assert unverified(tokens["access_token"])[1]["iss"] == "http://idp.localhost:9000"


async def test_an_idp_session_skips_the_form(oauth: OAuthClient) -> None:
    first = await oauth.authorize()
    assert first.form is not None
    second = await oauth.authorize()
    assert second.form is None  # single sign-on
    assert second.redirect.status_code == 302
    assert second.params["state"] == second.state
    assert (await oauth.exchange(second)).status_code == 200


@pytest.mark.parametrize("forged", ["{sid}:clients.x", "{sid}.not-the-secret", "{sid}", ""])
async def test_a_forged_session_cookie_is_no_session(oauth: OAuthClient, idp: IdP, forged: str) -> None:
    await oauth.login()  # the session's indexes exist: "{sid}:clients" names one
    jar = oauth.browser.cookies(idp.url)
    jar["devidp_session"] = forged.format(sid=jar["devidp_session"].split(".")[0])
    again = await oauth.authorize()
    assert again.form is not None
    assert again.redirect.status_code == 302


async def test_prompt_login_forces_the_form(oauth: OAuthClient) -> None:
    await oauth.authorize()
    again = await oauth.authorize(prompt="login")
    assert again.form is not None
    assert again.redirect.status_code == 302
    assert "code" in again.params


async def test_prompt_none_without_session_is_login_required(oauth: OAuthClient, idp: IdP) -> None:
    url, _, state, _ = oauth.authorize_url(prompt="none")
    response = await oauth.browser.request("GET", url)
    assert response.status_code == 302
    assert query_of(response.headers["location"]) == {
        "error": "login_required",
        "state": state,
        "iss": idp.settings.issuer,
    }


@pytest.mark.parametrize(
    "pkce",
    [
        {"code_challenge": "", "code_challenge_method": ""},
        {"code_challenge_method": "plain"},
        {"code_challenge_method": ""},
    ],
    ids=["missing", "plain", "no-method"],
)
async def test_pkce_is_required_with_s256(oauth: OAuthClient, idp: IdP, pkce: dict[str, str]) -> None:
    url, _, state, _ = oauth.authorize_url(**pkce)
    response = await oauth.browser.request("GET", url)
    assert response.status_code == 302
    params = query_of(response.headers["location"])
    assert params["error"] == "invalid_request"
    assert params["state"] == state
    assert params["iss"] == idp.settings.issuer
    assert "code" not in params


async def test_wrong_verifier_is_refused_and_burns_the_code(oauth: OAuthClient) -> None:
    authorization = await oauth.authorize()
    other_verifier, _ = pkce_pair()
    refused = await oauth.exchange(authorization, code_verifier=other_verifier)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"
    assert (await oauth.exchange(authorization)).json()["error"] == "invalid_grant"


async def test_a_code_is_used_once(oauth: OAuthClient) -> None:
    authorization = await oauth.authorize()
    assert (await oauth.exchange(authorization)).status_code == 200
    again = await oauth.exchange(authorization)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


async def test_the_redirect_uri_must_match_the_authorization_request(oauth: OAuthClient) -> None:
    authorization = await oauth.authorize()
    response = await oauth.exchange(authorization, redirect_uri="https://app.example.com/other")
    assert response.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    "params",
    [{"redirect_uri": "https://evil.example/callback"}, {"redirect_uri": REDIRECT_URI + "/x"}, {"client_id": "nobody"}],
    ids=["foreign", "prefix", "unknown-client"],
)
async def test_no_redirect_to_an_unregistered_redirect_uri(oauth: OAuthClient, params: dict[str, str]) -> None:
    url, *_ = oauth.authorize_url(**params)
    response = await oauth.browser.request("GET", url)
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "Request refused" in response.text
    assert BANNER in response.text


async def test_bad_client_secret_is_invalid_client(oauth: OAuthClient) -> None:
    authorization = await oauth.authorize()
    oauth.secret = "not-the-secret-0123456789"
    basic = await oauth.exchange(authorization)
    assert basic.status_code == 401
    assert basic.json()["error"] == "invalid_client"
    assert basic.headers["www-authenticate"].startswith("Basic ")
    form = {"grant_type": "authorization_code", "code": authorization.params["code"], "redirect_uri": REDIRECT_URI}
    posted = await oauth.token(form, auth="post")
    assert posted.status_code == 401
    assert posted.json()["error"] == "invalid_client"


async def test_client_secret_post(oauth: OAuthClient) -> None:
    authorization = await oauth.authorize()
    form = {
        "grant_type": "authorization_code",
        "code": authorization.params["code"],
        "redirect_uri": REDIRECT_URI,
        "code_verifier": authorization.verifier,
    }
    assert (await oauth.token(form, auth="post")).status_code == 200


async def test_a_code_of_another_client_is_refused(tmp_path: Path, browser: Browser) -> None:
    other = client("other-client", "other-secret-0123456789")
    with running_devidp(tmp_path, (client(), other)) as idp:
        ours, theirs = OAuthClient(idp, browser), OAuthClient(idp, browser, "other-client", "other-secret-0123456789")
        try:
            authorization = await ours.authorize()
            stolen = await theirs.exchange(authorization)
            assert stolen.json()["error"] == "invalid_grant"
            assert (await ours.exchange(authorization)).json()["error"] == "invalid_grant"  # burnt
        finally:
            await ours.aclose()
            await theirs.aclose()


async def test_public_client_with_pkce(tmp_path: Path, browser: Browser) -> None:
    with running_devidp(tmp_path, (client("public-spa", None),)) as idp:
        oauth = OAuthClient(idp, browser, "public-spa", None)
        try:
            tokens = await oauth.login()
            with_secret = await oauth.http.post(
                f"{idp.url}/token", data={"grant_type": "client_credentials"}, auth=("public-spa", "guessed")
            )
        finally:
            await oauth.aclose()
    assert tokens["token_type"] == "Bearer"
    assert with_secret.status_code == 401


async def test_wrong_password_shows_the_form_again(oauth: OAuthClient) -> None:
    url, *_ = oauth.authorize_url()
    form = await oauth.browser.request("GET", url)
    wrong = await oauth.submit_login(form, "alice", "not-her-password")
    assert wrong.status_code == 401
    assert "Wrong username or password" in wrong.text
    assert "devidp_session" not in wrong.headers.get("set-cookie", "")
    unknown = await oauth.submit_login(form, "mallory", "wonderland")
    assert unknown.status_code == 401
    right = await oauth.submit_login(form, "alice", "wonderland")  # the same form still works
    assert right.status_code == 302


@pytest.fixture
async def other_browser() -> AsyncIterator[Browser]:
    b = Browser()
    yield b
    await b.aclose()


async def test_a_login_form_works_only_in_its_browser_and_once(
    oauth: OAuthClient, idp: IdP, other_browser: Browser
) -> None:
    url, *_ = oauth.authorize_url()
    form = await oauth.browser.request("GET", url)
    body = urlencode({"tx": login_tx(form), "username": "alice", "password": "wonderland"}).encode()
    # Login CSRF: another browser (here: the attacker's page posting into the victim's) lacks the binding cookie.
    forged = await other_browser.request("POST", f"{idp.url}/login", headers=FORM, content=body)
    assert forged.status_code == 403
    assert "devidp_session" not in forged.headers.get("set-cookie", "")
    assert (await oauth.browser.request("POST", f"{idp.url}/login", headers=FORM, content=body)).status_code == 302
    replay = await oauth.browser.request("POST", f"{idp.url}/login", headers=FORM, content=body)
    assert replay.status_code == 403


async def test_max_age_forces_a_new_login(oauth: OAuthClient) -> None:
    await oauth.authorize()
    assert (await oauth.authorize(max_age="3600")).form is None
    await asyncio.sleep(1.05)  # auth_time has one-second resolution
    assert (await oauth.authorize(max_age="1")).form is not None


async def test_userinfo(oauth: OAuthClient, idp: IdP) -> None:
    token = (await oauth.login())["access_token"]
    response = await oauth.http.get(f"{idp.url}/userinfo", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.json() == {
        "sub": "alice-0001",
        "name": "Alice Example",
        "preferred_username": "alice",
        "role": "admin",
        "email": "alice@example.com",
        "email_verified": True,
    }
    anonymous = await oauth.http.get(f"{idp.url}/userinfo")
    assert anonymous.status_code == 401
    forged = await oauth.http.get(f"{idp.url}/userinfo", headers={"Authorization": f"Bearer {token[:-4]}AAAA"})
    assert forged.status_code == 401
    assert 'error="invalid_token"' in forged.headers["www-authenticate"]


async def test_discovery(idp: IdP) -> None:
    async with httpx.AsyncClient() as http:
        doc = (await http.get(f"{idp.url}/.well-known/openid-configuration")).json()
    issuer = idp.settings.issuer
    assert doc["issuer"] == issuer
    for name, path in [
        ("authorization_endpoint", "/authorize"),
        ("token_endpoint", "/token"),
        ("jwks_uri", "/jwks"),
        ("revocation_endpoint", "/revoke"),
        ("end_session_endpoint", "/end_session"),
        ("userinfo_endpoint", "/userinfo"),
    ]:
        assert doc[name] == issuer + path
    assert doc["authorization_response_iss_parameter_supported"] is True
    assert doc["backchannel_logout_supported"] is True
    assert doc["backchannel_logout_session_supported"] is True
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["id_token_signing_alg_values_supported"] == ["ES256"]
    assert doc["response_types_supported"] == ["code"]
