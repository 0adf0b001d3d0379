"""The whole system in a real headless Chromium: the demo SPA served by bff, the reference IdP's login page, the demo
API behind bff, the Redis store. Chromium is Debian's (/usr/bin/chromium), driven by Playwright; no browser is
ever downloaded."""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from bff.session.manager import SessionManager
from bff.session.redis_store import RedisStore
from bff_devtools.acr import ACR_MFA, ACR_PWD, DEMO_OTP
from tests.support.demo_stack import Demo, running_demo

playwright_sync = pytest.importorskip("playwright.sync_api", reason="playwright is a test dependency")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ACCESS_TOKEN_TTL = 4.0
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    with running_demo(tmp_path_factory.mktemp("devidp"), access_token_ttl=ACCESS_TOKEN_TTL) as demo:
        yield demo


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium not found: install it with `apt-get install -y chromium` (Debian)", pytrace=False)
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


def log_in(page: Any, demo: Demo, username: str = "alice", password: str = "wonderland") -> None:
    page.goto(demo.url + "/")
    page.click("#login")
    page.wait_for_url(f"{demo.idp_url}/**")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{demo.url}/**")
    playwright_sync.expect(page.locator("#user")).to_contain_text("Example", timeout=TIMEOUT_MS)


def call(page: Any, button: str) -> str:
    page.locator("#result").evaluate("el => el.textContent = ''")
    page.click(button)
    playwright_sync.expect(page.locator("#result")).to_contain_text("HTTP", timeout=TIMEOUT_MS)
    return str(page.locator("#result").text_content())


def test_login_user_and_an_api_call(page: Any, demo: Demo) -> None:
    log_in(page, demo)
    playwright_sync.expect(page.locator("#user")).to_contain_text("Alice Example")
    # The session cookie is HttpOnly: the page's JavaScript cannot see it.
    assert "__Host-bff" not in page.evaluate("document.cookie")
    assert "__Host-bff" not in str(page.locator("#cookies").text_content())
    cookies = {c["name"]: c for c in page.context.cookies(demo.url)}
    assert cookies["__Host-bff"]["httpOnly"] is True
    assert cookies["__Host-bff"]["sameSite"] == "Strict"
    result = call(page, "#call-me")
    assert "HTTP 200" in result
    assert "alice-0001" in result
    # The reports API takes only a token for its own audience: bff exchanged alice's for one (RFC 8693).
    reports = call(page, "#call-reports")
    assert "HTTP 200" in reports
    assert "demo-reports" in reports
    assert "eyJ" not in page.content()  # no JWT anywhere in the page


def test_the_login_is_pushed_and_the_idp_url_carries_only_the_request_uri(page: Any, demo: Demo) -> None:
    """PAR (RFC 9126), which the reference IdP offers and bff uses by default: the URL Chromium shows at the IdP
    holds no scope, redirect_uri, state or PKCE challenge, and the request_uri it holds works once."""
    page.goto(demo.url + "/")
    page.click("#login")
    page.wait_for_url(f"{demo.idp_url}/**")
    at_idp = page.url
    assert set(dict(parse_qsl(urlsplit(at_idp).query))) == {"client_id", "request_uri"}, at_idp
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "wonderland")
    page.click("button[type=submit]")
    page.wait_for_url(f"{demo.url}/**")
    playwright_sync.expect(page.locator("#user")).to_contain_text("Example", timeout=TIMEOUT_MS)
    replayed = page.goto(at_idp)
    assert replayed is not None
    assert replayed.status == 400
    assert "invalid_request_uri" in page.content()


def test_step_up_to_a_second_factor_and_the_call_is_retried(page: Any, demo: Demo) -> None:
    """RFC 9470 round trip: the API refuses a password-only login, the SPA follows bff's login_url, the IdP asks
    for the second factor, and back on the page the call is retried with the new session's token."""
    log_in(page, demo)
    playwright_sync.expect(page.locator("#user")).to_contain_text(ACR_PWD)
    page.click("#call-admin-action")
    page.wait_for_url(f"{demo.idp_url}/**")
    playwright_sync.expect(page.locator("body")).to_contain_text("second factor")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "wonderland")
    page.fill("input[name=otp]", DEMO_OTP)
    page.click("button[type=submit]")
    page.wait_for_url(f"{demo.url}/")
    result = page.locator("#result")
    playwright_sync.expect(result).to_contain_text("POST /api/admin/actions → HTTP 200", timeout=TIMEOUT_MS)
    playwright_sync.expect(result).to_contain_text("retried after the step-up login")
    playwright_sync.expect(result).to_contain_text(ACR_MFA)
    playwright_sync.expect(page.locator("#user")).to_contain_text(ACR_MFA)
    assert page.evaluate("sessionStorage.length") == 0  # the retry was used up: no loop
    assert "eyJ" not in page.content()


def test_tokens_are_refreshed_after_the_access_token_expired(page: Any, demo: Demo) -> None:
    log_in(page, demo)
    before = demo.bff.tokens.refresh_count
    time.sleep(ACCESS_TOKEN_TTL + 0.5)
    assert "HTTP 200" in call(page, "#call-items")
    assert demo.bff.tokens.refresh_count > before
    page.click("#call-me")
    playwright_sync.expect(page.locator("#refreshed")).to_contain_text("Tokens refreshed", timeout=TIMEOUT_MS)


def test_server_sent_events_arrive_live(page: Any, demo: Demo) -> None:
    log_in(page, demo)
    page.click("#start-ticks")
    ticks = page.locator("#ticks li")
    playwright_sync.expect(ticks.first).to_be_visible(timeout=TIMEOUT_MS)
    first_seen = ticks.count()
    assert first_seen < 10  # the first tick is on screen while the upstream is still sending the rest
    playwright_sync.expect(ticks).to_have_count(first_seen + 2, timeout=TIMEOUT_MS)
    page.click("#stop-ticks")


def test_a_websocket_ticker_and_chat_through_bff_closed_with_4401_by_a_logout_elsewhere(page: Any, demo: Demo) -> None:
    log_in(page, demo)
    page.click("#ws-connect")
    playwright_sync.expect(page.locator("#ws-status")).to_have_text("Connected.")
    messages = page.locator("#ws-messages li")
    playwright_sync.expect(messages.first).to_contain_text("tick 1 for alice-0001")
    page.fill("#ws-text", "hello through bff")
    page.click("#ws-send")
    playwright_sync.expect(page.locator("#ws-messages li", has_text="alice-0001: hello through bff")).to_be_visible()
    playwright_sync.expect(page.locator("#ws-messages li", has_text="tick 2 for alice-0001")).to_be_visible()
    assert "eyJ" not in page.content()  # the token went upstream in the handshake, never to the page
    # The same session logs out in another tab: bff closes this tab's socket with 4401.
    other = page.context.new_page()
    other.goto(demo.url + "/")
    status = other.evaluate(
        "async () => (await fetch('/bff/logout', {method: 'POST', headers: {'X-CSRF': '1'}})).status"
    )
    assert status == 200
    playwright_sync.expect(page.locator("#ws-status")).to_have_text("Closed with code 4401 (the session ended).")
    playwright_sync.expect(page.locator("#user")).to_contain_text("Not logged in")
    # Without a session the handshake is refused (401 before the demo API is contacted): the socket never opens.
    page.click("#ws-connect")
    playwright_sync.expect(page.locator("#ws-status")).to_have_text("Closed with code 1006.")


def test_logout(page: Any, demo: Demo) -> None:
    log_in(page, demo)
    seen: list[Any] = []
    page.on("response", lambda response: seen.append(response))
    with page.expect_response(lambda r: r.url == f"{demo.url}/bff/logout" and r.request.method == "POST") as posted:
        page.click("#logout")
    assert posted.value.status == 200  # its body is scanned by the suite's leak guard: no token in it
    page.wait_for_url(f"{demo.url}/")
    playwright_sync.expect(page.locator("#user")).to_contain_text("Not logged in")
    assert "__Host-bff" not in {c["name"] for c in page.context.cookies(demo.url)}
    # The script navigated to the one-time URL, which went on to the IdP with the ID token as hint; the IdP logged
    # out without a confirmation prompt and sent the browser back.
    hops = [r.url for r in seen if r.request.is_navigation_request()]
    assert hops[0].startswith(f"{demo.url}/bff/logout?handle=")
    assert hops[1].startswith(f"{demo.idp_url}/")
    assert "id_token_hint=" in hops[1]
    assert hops[-1] == f"{demo.url}/"
    # The IdP's session ended too: logging in again asks for the password.
    page.click("#login")
    page.wait_for_url(f"{demo.idp_url}/**")
    playwright_sync.expect(page.locator("input[name=password]")).to_be_visible()


def test_a_password_change_ends_the_session(chromium: Any, page: Any, demo: Demo) -> None:
    log_in(page, demo, "bob", "builder")
    admin = chromium.new_context()
    try:
        admin_page = admin.new_page()
        log_in(admin_page, demo)  # alice, an admin, with a session at the IdP
        admin_page.goto(demo.idp_url + "/admin?user=bob")
        form = admin_page.locator("form[action='/admin/users/bob/password']")
        form.locator("input[name=password]").fill("a-new-password-for-bob")
        form.locator("button[type=submit]").click()
        admin_page.wait_for_load_state()
    finally:
        admin.close()
    call(page, "#call-me")
    playwright_sync.expect(page.locator("#error")).to_be_visible(timeout=TIMEOUT_MS)
    assert "HTTP 200" not in str(page.locator("#result").text_content())
    playwright_sync.expect(page.locator("#user")).to_contain_text("Not logged in", timeout=TIMEOUT_MS)


async def _refresh_token_of(demo: Demo, cookie: str) -> str:
    store = RedisStore.from_url(demo.redis_url)
    try:
        sessions = SessionManager(store, demo.bff.config.session)
        session_id = sessions.session_id_from_cookie(cookie)
        assert session_id is not None
        loaded = await sessions.load(session_id, slide=False)
        assert loaded is not None
        token = loaded.session.tokens.refresh_token
        assert token
        return token
    finally:
        await store.aclose()


def test_a_replayed_refresh_token_ends_the_session(page: Any, demo: Demo) -> None:
    log_in(page, demo)
    cookie = {c["name"]: c["value"] for c in page.context.cookies(demo.url)}["__Host-bff"]
    # Playwright's sync API owns this thread's event loop: read the store from another thread.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        stolen = pool.submit(asyncio.run, _refresh_token_of(demo, cookie)).result()
    time.sleep(ACCESS_TOKEN_TTL + 0.5)
    assert "HTTP 200" in call(page, "#call-items")  # bff refreshed: `stolen` is now spent
    # An attacker replays the spent refresh token: the IdP revokes the whole family and tells bff.
    answer = httpx.post(
        f"{demo.idp_url}/token",
        data={"grant_type": "refresh_token", "refresh_token": stolen},
        auth=("spa-bff", demo.options.client_secret),
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"
    call(page, "#call-me")
    playwright_sync.expect(page.locator("#error")).to_be_visible(timeout=TIMEOUT_MS)
    playwright_sync.expect(page.locator("#user")).to_contain_text("Not logged in", timeout=TIMEOUT_MS)


def test_chromium_is_debians(chromium: Any) -> None:
    assert shutil.which("chromium") == CHROMIUM or Path(CHROMIUM).exists()
    assert chromium.version
