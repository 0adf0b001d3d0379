"""The store or the IdP going away costs availability, never sessions: 503 with Retry-After, cookie kept."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from tests.support.browser import Browser
from tests.support.oidc_provider import TestProvider
from tests.support.redis_server import RedisProcess
from tests.support.servers import serve
from tests.support.stack import running_bff, running_stack

XHR = {"X-CSRF": "1"}


def short_store_timeout(doc: dict[str, Any]) -> None:
    doc["session"]["store_timeout"] = "300ms"


async def test_a_stuck_redis_answers_503_and_keeps_the_session(redis_process: RedisProcess) -> None:
    with running_stack(redis_url=redis_process.url, customize=short_store_timeout) as stack:
        browser = Browser()
        try:
            await browser.follow(f"{stack.url}/bff/login")
            assert (await browser.request("GET", f"{stack.url}/bff/user", headers=XHR)).status_code == 200
            cookie = browser.cookies(stack.url)["__Host-bff"]
            redis_process.pause()
            try:
                down = await browser.request("GET", f"{stack.url}/bff/user", headers=XHR)
                ready = await browser.request("GET", f"{stack.url}/readyz")
            finally:
                redis_process.resume()
            assert down.status_code == 503
            assert down.json()["error"] == "temporarily_unavailable"
            assert int(down.headers["retry-after"]) > 0
            assert "set-cookie" not in down.headers  # the cookie is kept
            assert browser.cookies(stack.url)["__Host-bff"] == cookie
            assert ready.status_code == 503
            assert ready.json()["error"] == "not_ready"
            back = await browser.request("GET", f"{stack.url}/bff/user", headers=XHR)
            assert back.status_code == 200
            assert back.json()["sub"] == "alice-0001"
        finally:
            await browser.aclose()


async def test_a_refused_redis_connection_answers_503(redis_process: RedisProcess) -> None:
    with running_stack(redis_url=redis_process.url, customize=short_store_timeout) as stack:
        browser = Browser()
        try:
            await browser.follow(f"{stack.url}/bff/login")
            redis_process.stop()
            down = await browser.request("GET", f"{stack.url}/bff/user", headers=XHR)
            assert down.status_code == 503
            assert "set-cookie" not in down.headers
            # Starting a login needs no store (its state is in the browser); finishing it does.
            login = await browser.request("GET", f"{stack.url}/bff/login")
            assert login.status_code == 302
            finish = await browser.follow(login.headers["location"])
            assert finish[-1].status_code == 503
            assert "temporarily_unavailable" in finish[-1].text
            redis_process.start()  # an empty Redis (no persistence here): the session is gone, cleanly
            after = await browser.request("GET", f"{stack.url}/bff/user", headers=XHR)
            assert after.status_code == 401
            assert (await browser.request("GET", f"{stack.url}/bff/login")).status_code == 302
        finally:
            await browser.aclose()


async def test_an_unreachable_idp_at_startup_is_retried() -> None:
    provider = TestProvider()
    idp_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    idp_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    idp_socket.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    idp_url = f"http://127.0.0.1:{idp_socket.getsockname()[1]}"
    provider.issuer = idp_url
    browser = Browser()
    try:
        with running_bff(provider, idp_url) as stack:
            ready = await browser.request("GET", f"{stack.url}/readyz")
            assert ready.status_code == 503
            assert "idp metadata not loaded" in ready.json()["message"]
            login = await browser.request("GET", f"{stack.url}/bff/login")
            assert login.status_code == 503
            assert "not_ready" in login.text
            assert (await browser.request("GET", f"{stack.url}/healthz")).status_code == 200
            with serve(provider.app, sock=idp_socket):
                for _ in range(100):  # the background retry backs off from 0.5 s
                    if (await browser.request("GET", f"{stack.url}/readyz")).status_code == 200:
                        break
                    await asyncio.sleep(0.1)
                else:
                    pytest.fail("bff never became ready after the IdP came up")
                hops = await browser.follow(f"{stack.url}/bff/login")
                assert hops[-2].headers["location"] == stack.url + "/"
    finally:
        await browser.aclose()
