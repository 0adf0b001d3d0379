"""A session record in a store format this release does not read (written by a newer release, or by one configured
with a ``write_format`` this one predates; docs/storage-formats.md): the SPA gets 401 with its own error code, the
browser keeps its cookie and the store keeps the record, for the instances that read it. A new login replaces it,
and a logout (CSRF-checked) and a back-channel logout delete it, since the newer instances would still serve it."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from bff.session.memory_store import MemoryStore
from bff.session.redis_store import RedisStore
from bff.session.store import SessionStore
from tests.support.browser import Browser
from tests.support.stack import Stack, running_stack

XHR = {"X-CSRF": "1", "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"}
NAVIGATION = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}


@pytest.fixture(params=["redis", "memory"])
def stack(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Stack]:
    def with_route(doc: dict[str, Any]) -> None:
        # Never reached: the request fails at its session, before any upstream call.
        doc["routes"] = [{"path": "/api", "upstream": "http://127.0.0.1:9/", "token": "user"}]

    with running_stack(redis_url=redis_url if request.param == "redis" else None, customize=with_route) as stack:
        yield stack


@asynccontextmanager
async def app_store(stack: Stack, redis_url: str) -> AsyncIterator[SessionStore]:
    """The app's store, reached from the test's event loop (the app's Redis connections live on the server's)."""
    inner = getattr(stack.app.store, "inner", stack.app.store)  # under the metering wrapper app.py adds
    if isinstance(inner, MemoryStore):
        yield inner
        return
    store = RedisStore.from_url(redis_url)
    try:
        yield store
    finally:
        await store.aclose()


async def rewrite_in_format(stack: Stack, browser: Browser, redis_url: str, first_byte: int) -> tuple[str, bytes]:
    """Replace the browser's session record with one in format ``first_byte``, encrypted as bff encrypts; returns
    the store key and the bytes stored."""
    sessions = stack.app.sessions
    session_id = sessions.session_id_from_cookie(browser.cookies(stack.url)["__Host-bff"])
    assert session_id is not None
    key = sessions.key_for(session_id)
    blob = sessions._sessions.encrypt(bytes([first_byte]) + b"what a newer release writes", key.encode())
    async with app_store(stack, redis_url) as store:
        assert await store.get(key) is not None  # the record the login wrote: the right key
        await store.set(key, blob, 600)
    return key, blob


async def test_a_newer_format_is_401_session_format_unsupported_and_the_record_stays(
    stack: Stack, browser: Browser, redis_url: str
) -> None:
    await browser.follow(f"{stack.url}/bff/login")
    key, blob = await rewrite_in_format(stack, browser, redis_url, 3)
    for path in ("/bff/user", "/api/items"):
        answer = await browser.request("GET", f"{stack.url}{path}", headers=XHR)
        assert answer.status_code == 401, (path, answer.text)
        assert answer.json()["error"] == "session_format_unsupported", path
        assert "set-cookie" not in answer.headers, path
    async with app_store(stack, redis_url) as store:
        assert await store.get(key) == blob
    assert "__Host-bff" in browser.cookies(stack.url)


async def stored(stack: Stack, redis_url: str, key: str) -> bytes | None:
    async with app_store(stack, redis_url) as store:
        return await store.get(key)


async def test_a_new_login_works_over_a_record_in_a_newer_format(
    stack: Stack, browser: Browser, redis_url: str
) -> None:
    await browser.follow(f"{stack.url}/bff/login")
    key, _ = await rewrite_in_format(stack, browser, redis_url, 3)
    await browser.follow(f"{stack.url}/bff/login")  # the callback meets the unreadable previous session
    user = await browser.request("GET", f"{stack.url}/bff/user", headers=XHR)
    assert user.status_code == 200, user.text
    assert await stored(stack, redis_url, key) is None  # replaced, as a readable one would be


async def test_a_post_logout_deletes_a_record_in_a_newer_format(stack: Stack, browser: Browser, redis_url: str) -> None:
    await browser.follow(f"{stack.url}/bff/login")
    key, _ = await rewrite_in_format(stack, browser, redis_url, 3)
    logout = await browser.request("POST", f"{stack.url}/bff/logout", headers=XHR)
    assert logout.status_code == 200, logout.text
    assert "__Host-bff" not in browser.cookies(stack.url)
    assert await stored(stack, redis_url, key) is None


async def test_a_get_logout_deletes_a_record_in_a_newer_format_only_with_its_sid(
    stack: Stack, browser: Browser, redis_url: str
) -> None:
    await browser.follow(f"{stack.url}/bff/login")
    logout_url = (await browser.request("GET", f"{stack.url}/bff/user", headers=XHR)).json()["logout_url"]
    key, blob = await rewrite_in_format(stack, browser, redis_url, 3)
    cookie = browser.cookies(stack.url)["__Host-bff"]
    # Without the sid (a link on another page could make that navigation): nothing is deleted.
    forged = await browser.request("GET", f"{stack.url}/bff/logout", headers=NAVIGATION)
    assert forged.status_code == 302
    assert await stored(stack, redis_url, key) == blob
    browser.cookies(stack.url)["__Host-bff"] = cookie  # the forged navigations cleared it
    bad = await browser.request("GET", f"{stack.url}/bff/logout?sid=wrong", headers=NAVIGATION)
    assert bad.status_code == 302
    assert await stored(stack, redis_url, key) == blob
    browser.cookies(stack.url)["__Host-bff"] = cookie  # the forged navigations cleared it
    good = await browser.request("GET", f"{stack.url}{logout_url}", headers=NAVIGATION)
    assert good.status_code == 302
    assert await stored(stack, redis_url, key) is None


async def test_a_back_channel_logout_deletes_a_record_in_a_newer_format(
    stack: Stack, browser: Browser, redis_url: str
) -> None:
    """Skipping it as unusable would let the session outlive the IdP's logout on the instances that read it."""
    await browser.follow(f"{stack.url}/bff/login")
    id_token = stack.provider.token_responses[-1]["id_token"]
    payload = id_token.split(".")[1]
    sid = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sid"]
    key, _ = await rewrite_in_format(stack, browser, redis_url, 3)
    token = stack.provider.mint_logout_token(sid=sid)
    async with httpx.AsyncClient(timeout=10) as idp:
        answer = await idp.post(
            f"{stack.url}/bff/backchannel-logout",
            content=f"logout_token={token}".encode(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
    assert answer.status_code == 200, answer.text
    assert await stored(stack, redis_url, key) is None
