"""``/admin`` (demo mode): only for an IdP session of a user with role admin, every POST with the session's CSRF
token; it lists a user's token families (never a token), revokes one, changes a password, rotates the key."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from tests.support.browser import Browser
from tests.support.devidp import FORM, IdP, LogoutReceiver, OAuthClient, running_devidp


def csrf_of(page: str) -> str:
    match = re.search(r"name='csrf' value='([^']+)'", page)
    assert match is not None, "no CSRF token in the page"
    return match.group(1)


async def post_form(oauth: OAuthClient, path: str, **fields: str) -> httpx.Response:
    body = urlencode(fields).encode()
    return await oauth.browser.request("POST", f"{oauth.idp.url}{path}", headers=FORM, content=body)


async def test_without_a_session_the_admin_page_asks_to_sign_in(oauth: OAuthClient, idp: IdP) -> None:
    page = await oauth.browser.request("GET", f"{idp.url}/admin")
    assert page.status_code == 200
    assert "Sign in to the admin page" in page.text
    signed_in = await oauth.submit_login(page, "alice", "wonderland")
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/admin"
    admin = await oauth.browser.request("GET", f"{idp.url}/admin")
    assert admin.status_code == 200
    assert "Signed in as <b>alice</b>" in admin.text


async def test_a_user_without_the_admin_role_is_refused(oauth: OAuthClient, idp: IdP) -> None:
    await oauth.authorize("bob", "builder")
    assert (await oauth.browser.request("GET", f"{idp.url}/admin")).status_code == 403
    assert (await oauth.browser.request("GET", f"{idp.url}/admin/api/session")).status_code == 403
    assert (await post_form(oauth, "/admin/keys/rotate", csrf="anything")).status_code == 403


async def test_the_page_lists_families_without_tokens(oauth: OAuthClient, idp: IdP) -> None:
    tokens = await oauth.login()
    page = await oauth.browser.request("GET", f"{idp.url}/admin?user=alice")
    assert "spa-bff" in page.text
    assert "active" in page.text
    for name in ("access_token", "refresh_token", "id_token"):
        assert tokens[name] not in page.text
    families = (await oauth.browser.request("GET", f"{idp.url}/admin/api/users/alice/families")).json()
    [family] = families["families"]
    assert family["client_id"] == "spa-bff"
    assert family["state"] == "active"
    assert tokens["refresh_token"] not in str(families)


@pytest.mark.parametrize("csrf", [None, "", "wrong"])
async def test_every_post_needs_the_csrf_token(oauth: OAuthClient, idp: IdP, csrf: str | None) -> None:
    tokens = await oauth.login()
    families = (await oauth.browser.request("GET", f"{idp.url}/admin/api/users/alice/families")).json()
    family_id = families["families"][0]["family_id"]
    fields = {} if csrf is None else {"csrf": csrf}
    assert (await post_form(oauth, f"/admin/families/{family_id}/revoke", **fields)).status_code == 403
    headers = {} if csrf is None else {"X-CSRF-Token": csrf}
    api = await oauth.browser.request("POST", f"{idp.url}/admin/api/families/{family_id}/revoke", headers=headers)
    assert api.status_code == 403
    assert api.json() == {"error": "csrf"}
    assert (await oauth.refresh(tokens["refresh_token"])).status_code == 200  # nothing was revoked


async def test_revoking_a_family_from_the_page(
    oauth: OAuthClient, idp: IdP, receiver: tuple[LogoutReceiver, str]
) -> None:
    tokens = await oauth.login()
    page = await oauth.browser.request("GET", f"{idp.url}/admin")
    family_id = re.search(r"/admin/families/([^/]+)/revoke", page.text)
    assert family_id is not None
    done = await post_form(oauth, f"/admin/families/{family_id.group(1)}/revoke", csrf=csrf_of(page.text))
    assert done.status_code == 303
    assert (await oauth.refresh(tokens["refresh_token"])).json()["error"] == "invalid_grant"
    assert len(receiver[0].tokens) == 1  # the client heard about it
    after = await oauth.browser.request("GET", f"{idp.url}{done.headers['location']}")
    assert "revoked (admin)" in after.text
    assert "The family was revoked" in after.text


async def test_changing_a_password_from_the_page(oauth: OAuthClient, idp: IdP, browser: Browser) -> None:
    await oauth.authorize()
    page = await oauth.browser.request("GET", f"{idp.url}/admin?user=bob")
    weak = await post_form(oauth, "/admin/users/bob/password", csrf=csrf_of(page.text), password="short")
    assert weak.headers["location"] == "/admin?user=bob&done=weak"
    done = await post_form(oauth, "/admin/users/bob/password", csrf=csrf_of(page.text), password="can-we-fix-it")
    assert done.status_code == 303
    bobs_browser = Browser()
    bob = OAuthClient(idp, bobs_browser)
    try:
        assert (await bob.authorize("bob", "builder")).redirect.status_code == 401
        assert (await bob.authorize("bob", "can-we-fix-it")).redirect.status_code == 302
        login_page = await bob.browser.request("GET", bob.authorize_url(prompt="login")[0])
        assert "(changed)" in login_page.text  # the demo list no longer shows the old password
    finally:
        await bob.aclose()
        await bobs_browser.aclose()


async def test_rotating_the_key_from_the_page(oauth: OAuthClient, idp: IdP) -> None:
    await oauth.authorize()
    page = await oauth.browser.request("GET", f"{idp.url}/admin")
    before = (await oauth.http.get(f"{idp.url}/jwks")).json()["keys"]
    done = await post_form(oauth, "/admin/keys/rotate", csrf=csrf_of(page.text))
    assert done.status_code == 303
    after = (await oauth.http.get(f"{idp.url}/jwks")).json()["keys"]
    assert len(before) == 1
    assert [k["kid"] for k in after][1:] == [before[0]["kid"]]


async def test_the_json_api(oauth: OAuthClient, idp: IdP) -> None:
    tokens = await oauth.login()
    session = (await oauth.browser.request("GET", f"{idp.url}/admin/api/session")).json()
    assert session["username"] == "alice"
    headers = {"X-CSRF-Token": session["csrf_token"]}
    families = (await oauth.browser.request("GET", f"{idp.url}/admin/api/users/alice/families")).json()["families"]
    url = f"{idp.url}/admin/api/families/{families[0]['family_id']}/revoke"
    assert (await oauth.browser.request("POST", url, headers=headers)).json() == {"revoked": True}
    assert (await oauth.browser.request("POST", url, headers=headers)).json() == {"revoked": False}
    assert (await oauth.refresh(tokens["refresh_token"])).json()["error"] == "invalid_grant"
    rotated = await oauth.browser.request("POST", f"{idp.url}/admin/api/keys/rotate", headers=headers)
    assert rotated.json()["kid"] == (await oauth.http.get(f"{idp.url}/jwks")).json()["keys"][0]["kid"]
    unknown = await oauth.browser.request("GET", f"{idp.url}/admin/api/users/mallory/families")
    assert unknown.status_code == 404


async def test_the_api_needs_a_session(idp: IdP) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{idp.url}/admin/api/session")
    assert response.status_code == 401
    assert response.json() == {"error": "unauthenticated"}


async def test_outside_demo_mode_there_is_no_admin_page_and_no_passwords(tmp_path: Path, browser: Browser) -> None:
    with running_devidp(tmp_path, demo_mode=False) as idp:
        oauth = OAuthClient(idp, browser)
        try:
            form = await oauth.browser.request("GET", oauth.authorize_url()[0])
            admin = await oauth.browser.request("GET", f"{idp.url}/admin")
        finally:
            await oauth.aclose()
    assert form.status_code == 200
    assert "wonderland" not in form.text
    assert admin.status_code == 404
