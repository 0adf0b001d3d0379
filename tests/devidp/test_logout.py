"""RP-initiated logout (``/end_session``): with an ``id_token_hint`` the IdP session ends at once, the families
issued in it are revoked, its clients get a back-channel logout, and the browser is redirected only to a
registered ``post_logout_redirect_uri``; without a hint the user confirms with a CSRF-protected form."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

import pytest
from joserfc import jwt

from tests.support.devidp import (
    CLIENT_ID,
    FORM,
    POST_LOGOUT_URI,
    IdP,
    LogoutReceiver,
    OAuthClient,
    set_cookie,
    unverified,
)


def end_session_url(idp: IdP, **params: str) -> str:
    return f"{idp.url}/end_session?{urlencode(params)}"


async def test_logout_with_a_hint_ends_the_session_and_redirects(
    oauth: OAuthClient, idp: IdP, receiver: tuple[LogoutReceiver, str]
) -> None:
    tokens = await oauth.login()
    sid = unverified(tokens["id_token"])[1]["sid"]
    url = end_session_url(
        idp,
        id_token_hint=tokens["id_token"],
        client_id=CLIENT_ID,
        post_logout_redirect_uri=POST_LOGOUT_URI,
        state="s-123",
    )
    response = await oauth.browser.request("GET", url)
    assert response.status_code == 302
    assert response.headers["location"] == POST_LOGOUT_URI + "?state=s-123"
    assert "Max-Age=0" in set_cookie(response, "devidp_session")
    # Back-channel logout for the session, and its family is revoked.
    [token] = receiver[0].tokens
    claims = jwt.decode(token, await oauth.jwks(), algorithms=["ES256"]).claims
    assert (claims["sid"], claims["sub"], claims["aud"]) == (sid, "alice-0001", CLIENT_ID)
    assert (await oauth.refresh(tokens["refresh_token"])).json()["error"] == "invalid_grant"
    # The next authorization request needs the password again.
    assert (await oauth.authorize()).form is not None


async def test_no_redirect_to_an_unregistered_post_logout_uri(oauth: OAuthClient, idp: IdP) -> None:
    tokens = await oauth.login()
    url = end_session_url(
        idp, id_token_hint=tokens["id_token"], client_id=CLIENT_ID, post_logout_redirect_uri="https://evil.example/"
    )
    response = await oauth.browser.request("GET", url)
    assert response.status_code == 200
    assert "location" not in response.headers
    assert "signed out" in response.text
    assert (await oauth.authorize()).form is not None  # logged out all the same


async def test_a_forged_hint_ends_nothing(oauth: OAuthClient, idp: IdP, receiver: tuple[LogoutReceiver, str]) -> None:
    tokens = await oauth.login()
    head, payload, signature = tokens["id_token"].split(".")
    forged = f"{head}.{payload}.{signature[:-6]}AAAAAA"
    url = end_session_url(idp, id_token_hint=forged, post_logout_redirect_uri=POST_LOGOUT_URI)
    response = await oauth.browser.request("GET", url)
    assert response.status_code == 400
    assert "location" not in response.headers
    assert receiver[0].tokens == []
    assert (await oauth.authorize()).form is None  # still signed in
    assert (await oauth.refresh(tokens["refresh_token"])).status_code == 200


async def test_a_hint_for_another_client_is_refused(oauth: OAuthClient, idp: IdP) -> None:
    tokens = await oauth.login()
    url = end_session_url(idp, id_token_hint=tokens["id_token"], client_id="someone-else")
    assert (await oauth.browser.request("GET", url)).status_code == 400
    assert (await oauth.authorize()).form is None


def csrf_of(page: str) -> str:
    match = re.search(r"name='csrf' value='([^']+)'", page)
    assert match is not None
    return match.group(1)


@pytest.mark.parametrize("csrf", ["", "wrong"])
async def test_logout_without_a_hint_needs_the_confirmation_form(
    oauth: OAuthClient, idp: IdP, receiver: tuple[LogoutReceiver, str], csrf: str
) -> None:
    tokens = await oauth.login()
    page = await oauth.browser.request("GET", end_session_url(idp, post_logout_redirect_uri=POST_LOGOUT_URI))
    assert page.status_code == 200
    assert "Sign out of the identity provider?" in page.text
    assert (await oauth.authorize()).form is None  # asking is not logging out

    body: dict[str, Any] = {"confirm": "yes", "csrf": csrf}
    refused = await oauth.browser.request(
        "POST", f"{idp.url}/end_session", headers=FORM, content=urlencode(body).encode()
    )
    assert refused.status_code == 403
    assert (await oauth.authorize()).form is None

    body["csrf"] = csrf_of(page.text)
    confirmed = await oauth.browser.request(
        "POST", f"{idp.url}/end_session", headers=FORM, content=urlencode(body).encode()
    )
    assert confirmed.status_code == 200
    assert "location" not in confirmed.headers  # no hint, no redirect (RP-Initiated Logout 1.0 section 3)
    assert len(receiver[0].tokens) == 1
    assert (await oauth.refresh(tokens["refresh_token"])).json()["error"] == "invalid_grant"
    assert (await oauth.authorize()).form is not None
