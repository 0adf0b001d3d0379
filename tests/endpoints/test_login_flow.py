"""login -> /bff/user -> logout against a real OpenID Provider over HTTP, with the Redis and the memory store."""

from __future__ import annotations

import logging
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from bff.session.memory_store import MemoryStore
from tests.support.browser import Browser
from tests.support.oidc_provider import TestProvider
from tests.support.servers import serve
from tests.support.stack import Stack, running_bff

XHR = {"X-CSRF": "1"}


async def login(browser: Browser, stack: Stack, return_to: str = "/") -> list[httpx.Response]:
    return await browser.follow(f"{stack.url}/bff/login?returnTo={return_to}")


async def test_full_flow(stack: Stack, browser: Browser, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    hops = await login(browser, stack, "/orders/7?tab=items")
    assert [h.status_code for h in hops] == [302, 302, 302, 404]
    authorize = urlsplit(hops[0].headers["location"])
    assert f"{authorize.scheme}://{authorize.netloc}" == stack.idp_url
    query = parse_qs(authorize.query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["response_type"] == ["code"]
    assert len(query["state"][0]) >= 43
    assert len(query["nonce"][0]) >= 43
    assert hops[2].headers["location"] == stack.url + "/orders/7?tab=items"
    assert hops[2].headers["cache-control"] == "no-store"

    session_cookie = next(h for h in browser.set_cookie_headers if h.startswith("__Host-bff="))
    attributes = {a.strip().split("=")[0].lower() for a in session_cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite", "path"} <= attributes
    assert "domain" not in attributes
    assert "SameSite=Strict" in session_cookie
    assert "Path=/" in session_cookie
    login_cookie = next(h for h in browser.set_cookie_headers if h.startswith("__Host-bff-login-"))
    assert "SameSite=Lax" in login_cookie
    assert "HttpOnly" in login_cookie
    assert "Path=/" in login_cookie

    user = await browser.request("GET", f"{stack.url}/bff/user", headers=XHR)
    assert user.status_code == 200
    body = user.json()
    assert body["sub"] == "alice-0001"
    assert body["name"] == "Alice Example"
    assert body["email"] == "alice@example.com"
    assert body["session"]["expires_at"] > body["session"]["idle_expires_at"] > body["session"]["created_at"]
    assert body["logout_url"].startswith("/bff/logout?sid=")
    assert user.headers["cache-control"] == "no-store"
    request = stack.provider.token_requests[0]
    for token_field in ("access_token", "refresh_token", "id_token"):
        assert token_field not in body
    issued = stack.provider.issued_tokens()
    for token in issued:
        assert token not in user.text

    logout = await browser.request("GET", stack.url + body["logout_url"])
    assert logout.status_code == 302
    end_session = urlsplit(logout.headers["location"])
    assert f"{end_session.scheme}://{end_session.netloc}{end_session.path}" == stack.idp_url + "/end_session"
    params = parse_qs(end_session.query)
    assert params["post_logout_redirect_uri"] == [stack.url + "/"]
    assert "id_token_hint" in params
    assert "__Host-bff" not in browser.cookies(stack.url)
    assert stack.provider.revoked_tokens  # the refresh token was revoked at the IdP
    assert request["grant_type"] == "authorization_code"

    after = await browser.request("GET", f"{stack.url}/bff/user", headers=XHR)
    assert after.status_code == 401
    assert after.json()["error"] == "unauthenticated"
    # Nothing secret reached the server side's logs (bff's, uvicorn's, and httpx's for bff's calls to the IdP;
    # this test's own client runs on the main thread and logs what it likes).
    server_logs = "\n".join(r.getMessage() for r in caplog.records if r.threadName != "MainThread")
    assert "HTTP Request: POST" in server_logs  # the capture works: bff's token request was logged
    for token in issued:
        assert token not in server_logs


async def test_post_logout_answers_json_not_a_redirect(stack: Stack, browser: Browser) -> None:
    await login(browser, stack)
    response = await browser.request("POST", f"{stack.url}/bff/logout", headers=XHR)
    assert response.status_code == 200
    assert response.json()["redirect"].startswith(stack.url + "/bff/logout?handle=")  # no token for scripts
    assert (await browser.request("GET", f"{stack.url}/bff/user", headers=XHR)).status_code == 401


async def test_post_logout_needs_the_csrf_header(stack: Stack, browser: Browser) -> None:
    await login(browser, stack)
    response = await browser.request("POST", f"{stack.url}/bff/logout")
    assert response.status_code == 401
    assert response.json()["error"] == "csrf"
    assert (await browser.request("GET", f"{stack.url}/bff/user", headers=XHR)).status_code == 200


@pytest.mark.parametrize("query", ["", "?sid=", "?sid=forged-value"])
async def test_get_logout_without_the_right_sid_is_refused(stack: Stack, browser: Browser, query: str) -> None:
    await login(browser, stack)
    response = await browser.request("GET", f"{stack.url}/bff/logout{query}")
    assert response.status_code == 401
    assert "csrf" in response.text
    assert (await browser.request("GET", f"{stack.url}/bff/user", headers=XHR)).status_code == 200
    assert stack.provider.revoked_tokens == []


async def test_logout_without_a_session_just_goes_home(stack: Stack, browser: Browser) -> None:
    response = await browser.request("GET", f"{stack.url}/bff/logout")
    assert response.status_code == 302
    assert response.headers["location"] == stack.url + "/"


async def test_a_new_session_id_at_every_login(stack: Stack, browser: Browser) -> None:
    await login(browser, stack)
    first = browser.cookies(stack.url)["__Host-bff"]
    await login(browser, stack)
    second = browser.cookies(stack.url)["__Host-bff"]
    assert first != second
    # The replaced session is gone: its cookie no longer works.
    stale = await browser.http.get(f"{stack.url}/bff/user", headers={**XHR, "cookie": f"__Host-bff={first}"})
    assert stale.status_code == 401


async def test_several_tabs_can_log_in_at_once(stack: Stack, browser: Browser) -> None:
    tab1 = await browser.request("GET", f"{stack.url}/bff/login?returnTo=/one")
    tab2 = await browser.request("GET", f"{stack.url}/bff/login?returnTo=/two")
    hops2 = await browser.follow(tab2.headers["location"])
    hops1 = await browser.follow(tab1.headers["location"])
    assert hops2[1].headers["location"] == stack.url + "/two"
    assert hops1[1].headers["location"] == stack.url + "/one"
    assert (await browser.request("GET", f"{stack.url}/bff/user", headers=XHR)).status_code == 200


@pytest.mark.parametrize(
    "return_to",
    [
        "//evil.example",
        "https://evil.example/",
        "/%5Cevil.example",
        "%2F%2Fevil.example",
        "/%09/evil",
        "/.//evil.example",
        "/%2e//evil.example",
    ],
)
async def test_return_to_off_origin_falls_back_to_root(stack: Stack, browser: Browser, return_to: str) -> None:
    hops = await login(browser, stack, return_to)
    assert hops[2].headers["location"] == stack.url + "/"


async def test_user_needs_the_csrf_header(stack: Stack, browser: Browser) -> None:
    await login(browser, stack)
    for headers in (
        {},
        {"X-CSRF": "0"},
        {**XHR, "Sec-Fetch-Site": "cross-site"},
        {**XHR, "Origin": "https://evil.example"},
    ):
        response = await browser.request("GET", f"{stack.url}/bff/user", headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"] == "csrf"
    ok = await browser.request(
        "GET", f"{stack.url}/bff/user", headers={**XHR, "Sec-Fetch-Site": "same-origin", "Origin": stack.url}
    )
    assert ok.status_code == 200


async def test_bad_cookies_are_unauthenticated(stack: Stack, browser: Browser) -> None:
    await login(browser, stack)
    good = browser.cookies(stack.url)["__Host-bff"]
    session_id, _, signature = good.rpartition(".")
    flipped = session_id[:-1] + ("B" if session_id[-1] == "A" else "A")
    for value in (good + "x", session_id, "x" * 600, f"{flipped}.{signature}", "", "%00"):
        response = await browser.http.get(f"{stack.url}/bff/user", headers={**XHR, "cookie": f"__Host-bff={value}"})
        assert response.status_code == 401
        assert response.json() == {"error": "unauthenticated", "message": "no session; log in at /bff/login"}
    # A validly signed id that names no session (e.g. expired and gone) is the same 401.
    unknown = stack.app.sessions.cookie_value("no-such-session-id-0000000000000000000000")
    response = await browser.http.get(f"{stack.url}/bff/user", headers={**XHR, "cookie": f"__Host-bff={unknown}"})
    assert response.status_code == 401


async def test_errors_are_json_with_stable_codes(stack: Stack, browser: Browser) -> None:
    not_found = await browser.request("GET", f"{stack.url}/bff/nope", headers=XHR)
    assert (not_found.status_code, not_found.json()["error"]) == (404, "not_found")
    elsewhere = await browser.request("GET", f"{stack.url}/no/route")
    assert (elsewhere.status_code, elsewhere.json()["error"]) == (404, "not_found")
    wrong_method = await browser.request("DELETE", f"{stack.url}/bff/user", headers=XHR)
    assert (wrong_method.status_code, wrong_method.json()["error"]) == (405, "method_not_allowed")


async def test_health_and_readiness(stack: Stack, browser: Browser) -> None:
    assert (await browser.request("GET", f"{stack.url}/healthz")).json() == {"status": "ok"}
    ready = await browser.request("GET", f"{stack.url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"store": "ok", "idp": "ok"}


async def test_readiness_fails_once_the_drain_begins_while_the_rest_still_answers(
    stack: Stack, browser: Browser
) -> None:
    stack.app.drain.begin()  # what bff serve's server does on SIGTERM
    ready = await browser.request("GET", f"{stack.url}/readyz")
    assert (ready.status_code, ready.json()["error"]) == (503, "not_ready")
    assert "shutting down" in ready.json()["message"]
    assert (await browser.request("GET", f"{stack.url}/healthz")).status_code == 200


class CountingStore(MemoryStore):
    """The memory store, counting reads: proves which requests reach the store at all."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def get(self, key: str) -> bytes | None:
        self.reads += 1
        return await super().get(key)

    async def get_and_touch(self, key: str, ttl: float) -> bytes | None:
        self.reads += 1
        return await super().get_and_touch(key, ttl)


async def test_badly_signed_cookies_never_reach_the_store(browser: Browser) -> None:
    provider = TestProvider()
    store = CountingStore()
    with serve(provider.app) as idp_url:
        provider.issuer = idp_url
        with running_bff(provider, idp_url, store=store) as stack:
            await login(browser, stack)
            good = browser.cookies(stack.url)["__Host-bff"]
            before = store.reads
            for value in (good[:-2] + "xx", good.partition(".")[0], "garbage"):
                response = await browser.http.get(
                    f"{stack.url}/bff/user", headers={**XHR, "cookie": f"__Host-bff={value}"}
                )
                assert response.status_code == 401
            assert store.reads == before
            assert (await browser.request("GET", f"{stack.url}/bff/user", headers=XHR)).status_code == 200
            assert store.reads == before + 1  # the control: a good cookie does read the store
