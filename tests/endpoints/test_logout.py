"""``/bff/logout`` as an attacker sees it: no token in any script-readable answer, one-time continuation URLs,
navigation-only redirects to the IdP, bookmarks allowed, cross-site requests refused with an HTML page."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.support.browser import Browser
from tests.support.clock import FakeClock
from tests.support.stack import Stack, running_stack

XHR = {"X-CSRF": "1", "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"}
#: What Chromium sends for ``location.assign(url)`` from a page of the same origin.
NAVIGATION = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
#: What Chromium sends for a URL typed in the address bar or opened from a bookmark.
TYPED = {"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document", "Sec-Fetch-User": "?1"}


async def login(browser: Browser, stack: Stack) -> None:
    hops = await browser.follow(f"{stack.url}/bff/login")
    assert "__Host-bff" in browser.cookies(stack.url), [h.status_code for h in hops]


def id_token_of(stack: Stack) -> str:
    (answer,) = stack.provider.token_responses
    return str(answer["id_token"])


async def post_logout(browser: Browser, stack: Stack) -> httpx.Response:
    response = await browser.request("POST", f"{stack.url}/bff/logout", headers=XHR)
    assert response.status_code == 200, response.text
    return response


def assert_html_refusal(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert f"error: {error}" in response.text
    assert "location" not in response.headers


async def test_post_logout_answers_no_token_only_a_one_time_same_origin_url(stack: Stack, browser: Browser) -> None:
    await login(browser, stack)
    id_token = id_token_of(stack)
    response = await post_logout(browser, stack)
    for token in stack.provider.issued_tokens():
        assert token not in response.text
    assert "id_token_hint" not in response.text
    redirect = response.json()["redirect"]
    assert redirect.startswith(stack.url + "/bff/logout?handle=")
    assert "__Host-bff" not in browser.cookies(stack.url)  # the session ended with the POST already
    assert (await browser.request("GET", f"{stack.url}/bff/user", headers=XHR)).status_code == 401
    assert stack.provider.revoked_tokens

    # The top-level navigation to it is sent on to the IdP with the ID token as hint: no confirmation prompt.
    hop = await browser.request("GET", redirect, headers=NAVIGATION)
    assert hop.status_code == 302
    assert hop.headers["cache-control"] == "no-store"
    assert hop.headers["referrer-policy"] == "no-referrer"
    target = urlsplit(hop.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == stack.idp_url + "/end_session"
    params = parse_qs(target.query)
    assert params["id_token_hint"] == [id_token]
    assert params["post_logout_redirect_uri"] == [stack.url + "/"]
    hops = await browser.follow(hop.headers["location"])
    assert stack.provider.end_session_requests[0]["id_token_hint"] == id_token
    assert hops[0].headers["location"] == stack.url + "/"

    # Once only: a replay gets the HTML page, never the IdP URL again.
    replay = await browser.request("GET", redirect, headers=NAVIGATION)
    assert_html_refusal(replay, 400, "logout_expired")
    assert id_token not in replay.text


@pytest.mark.parametrize("handle", ["forged", "", "x" * 5000, "%00", "A" * 43])
async def test_an_unknown_logout_handle_gets_the_html_page(stack: Stack, browser: Browser, handle: str) -> None:
    response = await browser.request("GET", f"{stack.url}/bff/logout?handle={handle}", headers=NAVIGATION)
    assert_html_refusal(response, 400, "logout_expired")


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"},  # fetch()
        {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"},  # <img src>
        {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "iframe"},  # a frame
        {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"},
        {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"},
    ],
    ids=["fetch", "img", "iframe", "cross-site", "same-site"],
)
async def test_the_redirect_to_the_idp_is_for_top_level_navigations_only(
    stack: Stack, browser: Browser, headers: dict[str, str]
) -> None:
    """A script that fetched the continuation URL could read the IdP URL (and the ID token in it) from
    ``response.url`` if the IdP allowed CORS; a refusal does not spend the handle."""
    await login(browser, stack)
    redirect = (await post_logout(browser, stack)).json()["redirect"]
    refused = await browser.request("GET", redirect, headers=headers)
    assert_html_refusal(refused, 401, "csrf")
    assert (await browser.request("GET", redirect, headers=NAVIGATION)).status_code == 302


async def test_a_logout_handle_expires() -> None:
    clock = FakeClock(start=float(int(time.time())))
    with running_stack(clock=clock) as stack:
        browser = Browser()
        try:
            stack.provider.clock = clock
            await login(browser, stack)
            redirect = (await post_logout(browser, stack)).json()["redirect"]
            clock.advance(121)
            response = await browser.request("GET", redirect, headers=NAVIGATION)
            assert_html_refusal(response, 400, "logout_expired")
        finally:
            await browser.aclose()


async def test_post_logout_without_a_session_goes_home(stack: Stack, browser: Browser) -> None:
    response = await browser.request("POST", f"{stack.url}/bff/logout", headers=XHR)
    assert response.json() == {"redirect": stack.url + "/"}


async def test_a_bookmarked_logout_link_works(stack: Stack, browser: Browser) -> None:
    await login(browser, stack)
    user = await browser.request("GET", f"{stack.url}/bff/user", headers=XHR)
    response = await browser.request("GET", stack.url + user.json()["logout_url"], headers=TYPED)
    assert response.status_code == 302, response.text
    assert response.headers["location"].startswith(stack.idp_url + "/end_session?")
    assert (await browser.request("GET", f"{stack.url}/bff/user", headers=XHR)).status_code == 401


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
async def test_a_cross_site_logout_link_is_refused_with_the_html_page(
    stack: Stack, browser: Browser, site: str
) -> None:
    await login(browser, stack)
    user = await browser.request("GET", f"{stack.url}/bff/user", headers=XHR)
    headers = {**TYPED, "Sec-Fetch-Site": site}
    response = await browser.request("GET", stack.url + user.json()["logout_url"], headers=headers)
    assert_html_refusal(response, 401, "csrf")
    assert (await browser.request("GET", f"{stack.url}/bff/user", headers=XHR)).status_code == 200
    assert stack.provider.revoked_tokens == []


async def test_a_logout_link_from_another_origin_is_refused_with_the_html_page(stack: Stack, browser: Browser) -> None:
    await login(browser, stack)
    user = await browser.request("GET", f"{stack.url}/bff/user", headers=XHR)
    headers = {**NAVIGATION, "Origin": "https://evil.example"}
    response = await browser.request("GET", stack.url + user.json()["logout_url"], headers=headers)
    assert_html_refusal(response, 401, "csrf")


async def test_navigation_endpoints_refuse_with_the_html_page(stack: Stack, browser: Browser) -> None:
    callback = await browser.request("GET", f"{stack.url}/bff/callback?state=unknown&code=x", headers=TYPED)
    assert_html_refusal(callback, 400, "invalid_state")
    logout = await browser.request("GET", f"{stack.url}/bff/logout?sid=forged", headers=TYPED)
    assert logout.status_code == 302  # no session: nothing to end, the sid is not even looked at
    await login(browser, stack)
    logout = await browser.request("GET", f"{stack.url}/bff/logout?sid=forged", headers=TYPED)
    assert_html_refusal(logout, 401, "csrf")
