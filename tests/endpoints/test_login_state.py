"""Pending logins under attack: an anonymous flood of ``GET /bff/login`` costs the store nothing, one browser holds
a bounded number of pending logins, tabs still log in side by side, and a callback works once, on any instance
that shares the store.

Store growth is measured where it lives: the keys under this app's prefix in the test Redis (``SCAN``), or the
memory store's own table.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from uuid import uuid4

import httpx
import pytest
import redis.asyncio

from bff.app import BffApp
from bff.endpoints.login import LOGIN_COOKIES_BUDGET
from bff.session.memory_store import MemoryStore
from tests.support.browser import Browser
from tests.support.clock import FakeClock
from tests.support.configs import base_document, make_config
from tests.support.oidc_provider import TestProvider
from tests.support.servers import serve
from tests.support.stack import Stack, bound_socket, running_stack

LOGIN_COOKIE = "__Host-bff-login"
#: The documented default of ``[session] max_pending_logins``.
MAX_PENDING = 5
FLOOD = 300


async def stored_keys(stack: Stack, redis_url: str) -> int:
    """How many keys this app holds in its store."""
    store = stack.app.store.inner  # the store app.py chose, behind its metering
    if isinstance(store, MemoryStore):
        return len(store._entries)
    prefix = "bff:" + stack.app.sessions._prefix  # RedisStore's own prefix, then the app's
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        return len([key async for key in client.scan_iter(match=prefix + "*", count=1000)])
    finally:
        await client.aclose()


def login_cookies(browser: Browser, stack: Stack) -> list[str]:
    return [name for name in browser.cookies(stack.url) if name.startswith(LOGIN_COOKIE)]


async def test_a_flood_of_anonymous_logins_stores_nothing(stack: Stack, redis_url: str) -> None:
    before = await stored_keys(stack, redis_url)
    assert before == 0
    async with httpx.AsyncClient(timeout=10) as attacker:

        async def one() -> None:
            attacker.cookies.clear()  # every request a new browser: no login cookie to bind to or bound by
            response = await attacker.get(f"{stack.url}/bff/login", params={"returnTo": "/" + "a" * 1500})
            assert response.status_code == 302

        for _ in range(FLOOD // 10):
            await asyncio.wait_for(asyncio.gather(*(one() for _ in range(10))), 10)
    assert await stored_keys(stack, redis_url) == before
    # The control: a completed login does store something (its session), so the count above can move.
    browser = Browser()
    try:
        hops = await asyncio.wait_for(browser.follow(f"{stack.url}/bff/login"), 10)
        assert hops[-2].status_code == 302
        assert await stored_keys(stack, redis_url) > before
    finally:
        await browser.aclose()


async def test_one_browser_holds_a_bounded_number_of_pending_logins(stack: Stack, browser: Browser) -> None:
    starts = []
    for i in range(3 * MAX_PENDING):
        start = await browser.request("GET", f"{stack.url}/bff/login?returnTo=/tab{i}")
        assert start.status_code == 302
        assert len(login_cookies(browser, stack)) <= MAX_PENDING
        starts.append(start)
    assert len(login_cookies(browser, stack)) == MAX_PENDING
    # The newest logins complete, in any order; each callback takes only its own login cookie with it.
    newest = range(2 * MAX_PENDING, 3 * MAX_PENDING)
    for left, i in enumerate(reversed(newest)):
        hops = await browser.follow(starts[i].headers["location"])
        assert hops[1].status_code == 302, hops[1].text
        assert hops[1].headers["location"] == f"{stack.url}/tab{i}"
        assert len(login_cookies(browser, stack)) == MAX_PENDING - 1 - left
    # The oldest were dropped to make room: their callbacks are refused.
    for i in (0, 2 * MAX_PENDING - 1):
        hops = await browser.follow(starts[i].headers["location"])
        assert hops[-1].status_code == 400
        assert "invalid_state" in hops[-1].text


async def test_tabs_that_start_their_logins_at_once_all_complete(stack: Stack, browser: Browser) -> None:
    # A restored browser session: every tab asks for /bff/login before any answer (and its cookie) is back.
    starts = await asyncio.wait_for(
        asyncio.gather(*(browser.http.get(f"{stack.url}/bff/login?returnTo=/t{i}") for i in range(3))), 10
    )
    for start in starts:
        browser._store(stack.url, start)
    for i, start in enumerate(starts):
        hops = await browser.follow(start.headers["location"])
        assert hops[1].status_code == 302, hops[1].text
        assert hops[1].headers["location"] == f"{stack.url}/t{i}"
    assert login_cookies(browser, stack) == []


async def callback_and_cookies(browser: Browser, login_url: str) -> tuple[str, str]:
    """Start a login at ``login_url`` and let the IdP answer: the callback URL and the browser's Cookie header."""
    start = await browser.request("GET", login_url)
    authorize = await browser.request("GET", start.headers["location"])
    assert authorize.status_code == 302
    cookies = "; ".join(f"{k}={v}" for k, v in browser.cookies(login_url).items())
    return str(authorize.headers["location"]), cookies


async def test_a_replayed_callback_is_refused_even_with_its_login_cookie(stack: Stack, browser: Browser) -> None:
    callback, cookies = await callback_and_cookies(browser, f"{stack.url}/bff/login")
    assert (await browser.request("GET", callback)).status_code == 302
    # Whoever kept a copy of the login cookie (the browser cleared it) replays the whole callback.
    replay = await browser.http.get(callback, headers={"cookie": cookies})
    assert replay.status_code == 400
    assert "error: invalid_state" in replay.text
    assert "already used" in replay.text
    assert len(stack.provider.token_requests) == 1  # the replay never reached the token endpoint


async def test_an_expired_login_is_refused_even_with_its_login_cookie(browser: Browser) -> None:
    clock = FakeClock(start=time.time())
    with running_stack(clock=clock) as stack:
        callback, cookies = await callback_and_cookies(browser, f"{stack.url}/bff/login")
        clock.advance(stack.config.session.login_timeout + 1)
        # The browser would have dropped the cookie by now (Max-Age); a client that kept it is refused all the same.
        response = await browser.http.get(callback, headers={"cookie": cookies})
        assert response.status_code == 400
        assert "error: invalid_state" in response.text
        assert "expired" in response.text
        assert stack.provider.token_requests == []


@contextlib.contextmanager
def two_instances(redis_url: str) -> Iterator[tuple[TestProvider, str, str]]:
    """Two bff instances behind one public origin, sharing one Redis and key prefix (as behind a load balancer)."""
    provider = TestProvider()
    prefix = f"e2e{uuid4().hex}:"
    with serve(provider.app) as idp_url:
        provider.issuer = idp_url
        socks = [bound_socket(), bound_socket()]
        origin = f"http://127.0.0.1:{socks[0].getsockname()[1]}"
        doc = base_document(public_origin=origin, issuer=idp_url)
        doc["oidc"]["client_secret"] = provider.client_secret or ""
        doc["session"]["store"] = redis_url
        doc["routes"] = []
        apps = [BffApp(make_config(doc), store_prefix=prefix) for _ in socks]
        with serve(apps[0], sock=socks[0]) as first, serve(apps[1], sock=socks[1]) as second:
            yield provider, first, second


async def test_a_login_started_on_one_instance_completes_on_another_once(redis_url: str, browser: Browser) -> None:
    with two_instances(redis_url) as (provider, first, second):
        callback, cookies = await callback_and_cookies(browser, f"{first}/bff/login?returnTo=/x")
        on_second = callback.replace(first, second)
        done = await browser.http.get(on_second, headers={"cookie": cookies})
        assert done.status_code == 302, done.text
        assert done.headers["location"] == f"{first}/x"
        for url in (callback, on_second):
            replay = await browser.http.get(url, headers={"cookie": cookies})
            assert replay.status_code == 400
            assert "already used" in replay.text
        assert len(provider.token_requests) == 1


@pytest.mark.parametrize("value", ["", "x", "x" * 5000, "%00", "AAAA" * 100])
async def test_garbage_login_cookies_are_dropped_at_the_next_login(stack: Stack, value: str) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        cookie = f"{LOGIN_COOKIE}-AAAAAAAAAAAAAAAA={value}; {LOGIN_COOKIE}-zz={value}"
        response = await client.get(f"{stack.url}/bff/login", headers={"cookie": cookie})
        assert response.status_code == 302
        cleared = [h for h in response.headers.get_list("set-cookie") if "Max-Age=0" in h]
        if value:
            assert sorted(h.partition("=")[0] for h in cleared) == [
                f"{LOGIN_COOKIE}-AAAAAAAAAAAAAAAA",
                f"{LOGIN_COOKIE}-zz",
            ]


async def test_max_pending_logins_is_the_per_browser_cap(browser: Browser) -> None:
    with running_stack(customize=lambda doc: doc["session"].update(max_pending_logins=2)) as stack:
        starts = [await browser.request("GET", f"{stack.url}/bff/login?returnTo=/t{i}") for i in range(4)]
        assert len(login_cookies(browser, stack)) == 2
        assert (await browser.follow(starts[1].headers["location"]))[-1].status_code == 400
        hops = await browser.follow(starts[2].headers["location"])
        assert hops[1].headers["location"] == f"{stack.url}/t2"


async def test_long_return_paths_keep_the_login_cookies_small(stack: Stack, browser: Browser) -> None:
    for i in range(MAX_PENDING):
        start = await browser.request("GET", f"{stack.url}/bff/login?returnTo=/{i}{'x' * 2000}")
        assert start.status_code == 302
        jar = browser.cookies(stack.url)
        size = sum(len(k) + len(v) for k, v in jar.items() if k.startswith(LOGIN_COOKIE))
        assert size <= LOGIN_COOKIES_BUDGET
    # The newest login always has its cookie, and completes.
    hops = await browser.follow(start.headers["location"])
    assert hops[1].headers["location"] == f"{stack.url}/{MAX_PENDING - 1}{'x' * 2000}"


async def test_a_request_stuffed_with_login_cookies_costs_a_bounded_answer(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        cookie = "; ".join(f"{LOGIN_COOKIE}-{i:016d}=junk" for i in range(500))
        response = await client.get(f"{stack.url}/bff/login", headers={"cookie": cookie})
        assert response.status_code == 302
        set_cookies = response.headers.get_list("set-cookie")
        # Only the first 2 x max_pending are looked at (and dropped); plus the new login's own cookie.
        assert len(set_cookies) == 2 * MAX_PENDING + 1
