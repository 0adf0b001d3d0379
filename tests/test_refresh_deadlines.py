"""A slow reference IdP end to end: bff (a real app on loopback, sessions in a real Redis), the reference IdP with
refresh-token rotation and reuse detection, and an API. The IdP rotates the family at once but holds its answer
back, as an IdP does whose database commit is slow or whose answer is stuck in a proxy.

* Slower than ``[oidc] timeout`` but within ``[tokens] refresh_timeout``: every request answers within its deadline
  (503 + Retry-After while the refresh goes on), the session survives, the next requests get the rotated token, the
  IdP saw the refresh token once and no family is revoked.
* Slower than ``refresh_timeout`` (an IdP that, for bff, never answers): the outcome is unknown and bff presents the
  old refresh token again. With the IdP's reuse grace window the session survives; without it the session ends
  with a clear 401 ``session_expired``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from bff.app import BffApp
from bff.types import Message, Receive, Scope, Send
from bff_devtools.devidp import ClientRegistration, DevIdPSettings, create_devidp_app
from tests.support.asgi import read_body, replaying, token_fingerprint_answer
from tests.support.browser import Browser
from tests.support.configs import base_document, make_config
from tests.support.devidp import FORM, login_tx
from tests.support.leak_guard import fingerprint
from tests.support.servers import serve
from tests.support.sessions import expire_in_store
from tests.support.stack import bound_socket

XHR = {"X-CSRF": "1"}
SECRET = "deadline-client-secret-0123456789"
#: How long a request waits for a refresh ([oidc] timeout); every answer must come within it plus this bound.
OIDC_TIMEOUT = 1.0
BOUND = 0.75


class StallingAnswers:
    """ASGI middleware in front of the IdP: records every refresh token presented to ``/token`` and holds back the
    answer to the next refreshes by the delays in ``stalls`` (the IdP has already rotated the family by then)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.presented: list[str] = []
        self.stalls: list[float] = []
        self.answered = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/token":
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        form = dict(parse_qsl(body.decode()))
        stall = 0.0
        if form.get("grant_type") == "refresh_token":
            self.presented.append(form["refresh_token"])
            stall = self.stalls.pop(0) if self.stalls else 0.0

        async def stalled_send(message: Message) -> None:
            if message["type"] == "http.response.start" and stall:
                await asyncio.sleep(stall)
            await send(message)

        await self.app(scope, replaying(body, receive), stalled_send)
        if form.get("grant_type") == "refresh_token":
            self.answered += 1


@dataclass(frozen=True)
class World:
    bff: BffApp
    url: str
    idp_url: str
    idp: StallingAnswers
    redis_url: str


@contextlib.contextmanager
def world(tmp_path: Path, redis_url: str, *, grace: float, refresh_timeout: str) -> Iterator[World]:
    bff_sock, idp_sock = bound_socket(), bound_socket()
    origin = f"http://127.0.0.1:{bff_sock.getsockname()[1]}"
    idp_url = f"http://127.0.0.1:{idp_sock.getsockname()[1]}"
    registration = ClientRegistration(
        "spa-bff", SECRET, redirect_uris=(f"{origin}/bff/callback",), post_logout_redirect_uris=(f"{origin}/",)
    )
    settings = DevIdPSettings(
        issuer=idp_url, data_dir=tmp_path / "idp", clients=(registration,), refresh_reuse_grace=grace
    )
    stalling = StallingAnswers(create_devidp_app(settings))
    with serve(stalling, sock=idp_sock), serve(token_fingerprint_answer, lifespan="off") as api_url:
        doc = base_document(public_origin=origin, issuer=idp_url, store=redis_url)
        doc["oidc"].update(client_secret=SECRET, timeout=f"{OIDC_TIMEOUT:g}s")
        doc["tokens"] = {"refresh_timeout": refresh_timeout}
        doc["routes"] = [{"path": "/api", "upstream": api_url, "token": "user"}]
        app = BffApp(make_config(doc), store_prefix=f"deadlines-{tmp_path.name}:")
        with serve(app, sock=bff_sock) as url:
            yield World(app, url, idp_url, stalling, redis_url)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    b = Browser()
    yield b
    await b.aclose()


async def sign_in(browser: Browser, w: World) -> None:
    hops = await browser.follow(f"{w.url}/bff/login")
    body = f"tx={login_tx(hops[-1])}&username=alice&password=wonderland".encode()
    submitted = await browser.request("POST", f"{w.idp_url}/login", headers=FORM, content=body)
    assert submitted.status_code == 302, submitted.text
    await browser.follow(submitted.headers["location"])


async def expire(w: World, browser: Browser) -> str:
    """Expire the session's access token in Redis (as bff sees it); returns it."""
    expired = await expire_in_store(w.bff, w.redis_url, browser.cookies(w.url)["__Host-bff"])
    return expired.session.tokens.access_token


async def timed(browser: Browser, url: str) -> tuple[float, httpx.Response]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await asyncio.wait_for(browser.request("GET", url, headers=XHR), 30)
    return loop.time() - started, response


async def family_states(browser: Browser, w: World) -> list[tuple[str, str | None]]:
    """alice's refresh-token families at the IdP (its admin API, with her IdP session in ``browser``)."""
    response = await browser.request("GET", f"{w.idp_url}/admin/api/users/alice/families")
    assert response.status_code == 200, response.text
    return [(f["state"], f["revoked_reason"]) for f in response.json()["families"]]


async def test_an_idp_slower_than_the_timeout_costs_a_503_not_the_session(
    tmp_path: Path, redis_url: str, browser: Browser
) -> None:
    with world(tmp_path, redis_url, grace=0, refresh_timeout="30s") as w:
        await sign_in(browser, w)
        old = await expire(w, browser)
        w.idp.stalls = [2.5]  # 2.5 x the user-facing timeout, well within refresh_timeout
        answers = []
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 15
        while loop.time() < give_up:
            took, response = await timed(browser, f"{w.url}/api/items")
            answers.append(response.status_code)
            assert took < OIDC_TIMEOUT + BOUND, (took, response.status_code)
            if response.status_code == 200:
                break
            assert response.status_code == 503, response.text
            assert response.json()["error"] == "temporarily_unavailable"
            assert response.headers["retry-after"] == "1"
            assert "set-cookie" not in response.headers  # the session is kept
        assert answers[0] == 503
        assert answers[-1] == 200, answers
        assert response.text != fingerprint(old)
        assert len(w.idp.presented) == 1  # the refresh token was presented exactly once
        assert await family_states(browser, w) == [("active", None)]
        assert (await browser.request("GET", f"{w.url}/api/items", headers=XHR)).status_code == 200


@pytest.mark.parametrize("grace", [30.0, 0.0], ids=["grace-window", "strict-reuse-detection"])
async def test_an_idp_that_answers_after_the_refresh_timeout(
    tmp_path: Path, redis_url: str, browser: Browser, grace: float
) -> None:
    with world(tmp_path, redis_url, grace=grace, refresh_timeout="1500ms") as w:
        await sign_in(browser, w)
        await expire(w, browser)
        w.idp.stalls = [3.0]  # the answer comes after bff abandoned the refresh: its outcome is unknown to bff
        took, first = await timed(browser, f"{w.url}/api/items")
        assert first.status_code == 503
        assert took < OIDC_TIMEOUT + BOUND
        for _ in range(200):  # the IdP's (late) answer went out; bff had stopped listening
            if w.idp.answered == 1:
                break
            await asyncio.sleep(0.05)
        assert w.idp.answered == 1
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 10
        while loop.time() < give_up:  # the IdP is probed after the failed refresh; then bff refreshes again
            took, response = await timed(browser, f"{w.url}/api/items")
            assert took < OIDC_TIMEOUT + BOUND
            if response.status_code != 503:
                break
            await asyncio.sleep(0.1)
        assert len(w.idp.presented) == 2
        assert w.idp.presented[0] == w.idp.presented[1]  # the same token, again
        if grace:
            assert response.status_code == 200, response.text
            assert await family_states(browser, w) == [("active", None)]
        else:
            assert response.status_code == 401, response.text
            assert response.json()["error"] == "session_expired"
            assert await family_states(browser, w) == [("revoked", "reuse_detected")]
