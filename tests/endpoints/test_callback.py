"""Every way a callback can be wrong ends in a 400 page and no session (OpenID Connect Core 3.1.3.7, RFC 9207,
RFC 9700 4.7)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from tests.support.browser import Browser
from tests.support.oidc_provider import REMOVE, IdTokenMode
from tests.support.stack import Stack, running_stack

XHR = {"X-CSRF": "1"}
LOGIN_COOKIE = "__Host-bff-login"


@pytest.fixture
def stack() -> Iterator[Stack]:
    """bff with the memory store only (the conftest's ``stack`` runs each test with Redis and with memory)."""
    with running_stack() as stack:
        yield stack


async def callback_url(browser: Browser, stack: Stack) -> str:
    """Start a login and let the IdP answer; return the callback URL without visiting it."""
    start = await browser.request("GET", f"{stack.url}/bff/login?returnTo=/x")
    authorize = await browser.request("GET", start.headers["location"])
    assert authorize.status_code == 302
    return str(authorize.headers["location"])


def with_params(url: str, **changes: str | None) -> str:
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query))
    for name, value in changes.items():
        if value is None:
            params.pop(name, None)
        else:
            params[name] = value
    return urlunsplit(parts._replace(query=urlencode(params)))


def login_cookies(browser: Browser, stack: Stack) -> list[str]:
    return [name for name in browser.cookies(stack.url) if name.startswith(LOGIN_COOKIE)]


async def assert_refused(
    browser: Browser, stack: Stack, response: httpx.Response, error: str, *, login_cookie_kept: bool = False
) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert f"error: {error}" in response.text
    assert "__Host-bff" not in browser.cookies(stack.url)
    # The login this callback named is over, whatever the outcome: its cookie goes with it. A callback naming no
    # login of this browser (no or a forged state) leaves the browser's real pending login alone.
    assert len(login_cookies(browser, stack)) == (1 if login_cookie_kept else 0), login_cookies(browser, stack)
    assert not any(h.startswith("__Host-bff=") for h in response.headers.get_list("set-cookie"))
    user = await browser.request("GET", f"{stack.url}/bff/user", headers=XHR)
    assert user.status_code == 401


async def test_the_happy_path_for_reference(stack: Stack, browser: Browser) -> None:
    response = await browser.request("GET", await callback_url(browser, stack))
    assert response.status_code == 302
    assert response.headers["location"] == stack.url + "/x"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert login_cookies(browser, stack) == []


async def test_idp_error(stack: Stack, browser: Browser) -> None:
    stack.provider.authorize_error = "access_denied"
    response = await browser.request("GET", await callback_url(browser, stack))
    await assert_refused(browser, stack, response, "idp_error")
    assert "access_denied" in response.text
    assert stack.provider.token_requests == []


async def test_idp_error_codes_are_not_reflected_raw(stack: Stack, browser: Browser) -> None:
    url = with_params(await callback_url(browser, stack), code=None, error="<script>alert(1)</script>")
    response = await browser.request("GET", url)
    await assert_refused(browser, stack, response, "idp_error")
    assert "<script>" not in response.text
    assert "unknown_error" in response.text


async def test_missing_state(stack: Stack, browser: Browser) -> None:
    url = with_params(await callback_url(browser, stack), state=None)
    await assert_refused(browser, stack, await browser.request("GET", url), "invalid_state", login_cookie_kept=True)


async def test_unknown_state(stack: Stack, browser: Browser) -> None:
    url = with_params(await callback_url(browser, stack), state="forged-state")
    await assert_refused(browser, stack, await browser.request("GET", url), "invalid_state", login_cookie_kept=True)


async def test_a_callback_works_once(stack: Stack, browser: Browser) -> None:
    url = await callback_url(browser, stack)
    assert (await browser.request("GET", url)).status_code == 302
    await browser.request("POST", f"{stack.url}/bff/logout", headers=XHR)
    await assert_refused(browser, stack, await browser.request("GET", url), "invalid_state")
    assert len(stack.provider.token_requests) == 1  # the replay never reached the token endpoint


async def test_a_login_finished_in_another_browser_is_refused(stack: Stack, browser: Browser) -> None:
    url = await callback_url(browser, stack)
    attacker = Browser()
    try:
        response = await attacker.request("GET", url)
        await assert_refused(attacker, stack, response, "invalid_state")
        assert "another browser" in response.text
    finally:
        await attacker.aclose()
    assert stack.provider.token_requests == []  # the stolen code was never spent
    # Without the login cookie there was nothing to consume, so the attacker cannot cancel the victim's login either.
    victim = await browser.request("GET", url)
    assert victim.status_code == 302
    assert victim.headers["location"] == stack.url + "/x"


async def test_a_forged_login_cookie_is_refused(stack: Stack, browser: Browser) -> None:
    url = await callback_url(browser, stack)
    for name in login_cookies(browser, stack):
        browser.cookies(stack.url)[name] = "forged.value"
    await assert_refused(browser, stack, await browser.request("GET", url), "invalid_state")


async def test_iss_mismatch(stack: Stack, browser: Browser) -> None:
    url = with_params(await callback_url(browser, stack), iss="https://evil.example")
    await assert_refused(browser, stack, await browser.request("GET", url), "invalid_state")
    assert stack.provider.token_requests == []


async def test_iss_missing_although_advertised(stack: Stack, browser: Browser) -> None:
    url = with_params(await callback_url(browser, stack), iss=None)
    response = await browser.request("GET", url)
    await assert_refused(browser, stack, response, "invalid_state")
    assert "RFC 9207" in response.text


async def test_no_iss_from_an_idp_that_does_not_advertise_it() -> None:
    with running_stack(send_iss=False) as stack:
        browser = Browser()
        try:
            url = await callback_url(browser, stack)
            assert "iss" not in dict(parse_qsl(urlsplit(url).query))
            assert (await browser.request("GET", url)).status_code == 302
        finally:
            await browser.aclose()


async def test_missing_code(stack: Stack, browser: Browser) -> None:
    url = with_params(await callback_url(browser, stack), code=None)
    await assert_refused(browser, stack, await browser.request("GET", url), "invalid_state")


async def test_a_refused_code(stack: Stack, browser: Browser) -> None:
    stack.provider.token_error = "invalid_grant"
    await assert_refused(
        browser, stack, await browser.request("GET", await callback_url(browser, stack)), "login_failed"
    )


async def test_an_idp_outage_during_the_exchange(stack: Stack, browser: Browser) -> None:
    stack.provider.fail_token_endpoint_with = 500
    response = await browser.request("GET", await callback_url(browser, stack))
    assert response.status_code == 503
    assert "temporarily_unavailable" in response.text
    assert response.headers["retry-after"]
    assert "__Host-bff" not in browser.cookies(stack.url)
    assert login_cookies(browser, stack) == []


@pytest.mark.parametrize("mode", ["bad_signature", "alg_none", "hs256_with_public_key", "header_jwk", "unknown_kid"])
async def test_forged_id_tokens_fail_the_login(stack: Stack, browser: Browser, mode: IdTokenMode) -> None:
    stack.provider.id_token_mode = mode
    await assert_refused(
        browser, stack, await browser.request("GET", await callback_url(browser, stack)), "invalid_id_token"
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"iss": "https://evil.example"}, "issuer"),
        ({"aud": "another-client"}, "audience"),
        ({"azp": "another-client"}, "azp"),
        # OpenID Connect Core 3.1.3.7 step 3: an extra audience the client does not trust, even with our azp.
        ({"aud": ["spa-bff", "another-client"], "azp": "spa-bff"}, "aud lists an audience the client does not trust"),
        # Core 3.1.3.8: at_hash binds the access token of the same answer (here the hash of another token).
        ({"at_hash": "R6WcBw6Zt9Ae3mEkLJa4SA"}, "at_hash does not match the access token"),
        ({"nonce": "not-the-nonce"}, "nonce"),
        ({"nonce": REMOVE}, "nonce"),
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"iat": int(time.time()) + 3600}, "future"),
        ({"sub": REMOVE}, "sub"),
    ],
)
async def test_id_token_claims_are_checked(
    stack: Stack, browser: Browser, override: dict[str, Any], message: str
) -> None:
    stack.provider.id_token_claims_override = override
    response = await browser.request("GET", await callback_url(browser, stack))
    await assert_refused(browser, stack, response, "invalid_id_token")
    assert message in response.text


async def test_an_extra_audience_listed_in_trusted_audiences_is_accepted(browser: Browser) -> None:
    def trust(doc: dict[str, Any]) -> None:
        doc["oidc"]["trusted_audiences"] = ["https://api.example.net"]

    with running_stack(customize=trust) as stack:
        stack.provider.id_token_claims_override = {"aud": ["spa-bff", "https://api.example.net"], "azp": "spa-bff"}
        response = await browser.request("GET", await callback_url(browser, stack))
        assert response.status_code == 302, response.text
        assert (await browser.request("GET", f"{stack.url}/bff/user", headers=XHR)).status_code == 200
