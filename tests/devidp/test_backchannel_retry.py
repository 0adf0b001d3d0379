"""Back-channel logout delivery under faults: the reference IdP retries a failed delivery in the background with a
bounded exponential back-off (a fresh logout token each time), never delays the logout that triggered it beyond
the first attempt, stops at the first success, never retries a refusal (4xx), and gives up after a few attempts."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import pytest
from joserfc import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bff_devtools.devidp import backchannel
from tests.support.browser import Browser
from tests.support.devidp import CLIENT_ID, IdP, OAuthClient, client, running_devidp
from tests.support.servers import serve
from tests.support.stack import bound_socket

BOUND = 10.0
#: The back-off the tests run with: the production one spans about a minute.
DELAYS = (0.2, 0.4, 0.8)


@dataclass
class FlakyReceiver:
    """A client's back-channel logout endpoint that answers ``failures`` with ``status``, then 200."""

    failures: int
    status: int = 503
    attempts: list[float] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.app = Starlette(routes=[Route("/backchannel", self._receive, methods=["POST"])])

    async def _receive(self, request: Request) -> Response:
        token = dict(parse_qsl((await request.body()).decode()))["logout_token"]
        with self.lock:
            self.attempts.append(time.monotonic())
            if len(self.attempts) <= self.failures:
                return Response(status_code=self.status)
            self.accepted.append(token)
        return Response(status_code=200, headers={"Cache-Control": "no-store"})


@pytest.fixture(autouse=True)
def short_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backchannel, "RETRY_DELAYS", DELAYS)


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[tuple[FlakyReceiver, str]]:
    failures, status = request.param
    flaky = FlakyReceiver(failures, status)
    with serve(flaky.app) as url:
        yield flaky, f"{url}/backchannel"


@pytest.fixture
def idp(tmp_path: Path, receiver: tuple[FlakyReceiver, str]) -> Iterator[IdP]:
    with running_devidp(tmp_path / "keys", (client(backchannel_logout_uri=receiver[1]),)) as running:
        yield running


async def _logout(idp: IdP, browser: Browser) -> float:
    """Log in and end the IdP session with an id_token_hint; returns when the logout answered."""
    oauth = OAuthClient(idp, browser)
    try:
        tokens = await oauth.login()
        query = urlencode({"id_token_hint": tokens["id_token"], "client_id": CLIENT_ID})
        response = await asyncio.wait_for(browser.request("GET", f"{idp.url}/end_session?{query}"), BOUND)
        assert response.status_code in (200, 302)
        return time.monotonic()
    finally:
        await oauth.aclose()


async def _settled(receiver: FlakyReceiver, attempts: int) -> None:
    """Wait (bounded) until ``attempts`` deliveries arrived, then a while longer to see that no more come."""
    deadline = time.monotonic() + BOUND
    while len(receiver.attempts) < attempts:
        assert time.monotonic() < deadline, f"{len(receiver.attempts)} of {attempts} deliveries arrived"
        await asyncio.sleep(0.02)
    await asyncio.sleep(sum(DELAYS) * 1.5)


@pytest.mark.parametrize("receiver", [(1, 503)], indirect=True)
async def test_a_failed_delivery_is_retried_in_the_background(
    idp: IdP, browser: Browser, receiver: tuple[FlakyReceiver, str]
) -> None:
    flaky = receiver[0]
    answered = await _logout(idp, browser)
    assert (len(flaky.attempts), flaky.accepted) == (1, [])  # the logout did not wait for the retry
    await _settled(flaky, 2)
    assert len(flaky.attempts) == 2  # stops at the first success
    assert flaky.attempts[1] - answered >= DELAYS[0] * 0.5  # backed off
    [token] = flaky.accepted
    oauth = OAuthClient(idp, browser)
    try:
        claims = jwt.decode(token, await oauth.jwks(), algorithms=["ES256"]).claims
    finally:
        await oauth.aclose()
    assert claims["aud"] == CLIENT_ID
    assert "sid" in claims


@pytest.mark.parametrize("receiver", [(100, 503)], indirect=True)
async def test_retries_are_bounded_and_back_off(
    idp: IdP, browser: Browser, receiver: tuple[FlakyReceiver, str]
) -> None:
    flaky = receiver[0]
    await _logout(idp, browser)
    await _settled(flaky, 1 + len(DELAYS))
    assert len(flaky.attempts) == 1 + len(DELAYS)
    gaps = [b - a for a, b in zip(flaky.attempts, flaky.attempts[1:], strict=False)]
    assert all(gap >= delay * 0.5 for gap, delay in zip(gaps, DELAYS, strict=True)), gaps
    assert gaps[-1] > gaps[0]  # exponential, not a fixed period


@pytest.mark.parametrize("receiver", [(1, 400)], indirect=True)
async def test_a_refusal_is_not_retried(idp: IdP, browser: Browser, receiver: tuple[FlakyReceiver, str]) -> None:
    """The RP answered 400 (section 2.8: the logout token is invalid to it): sending it again would not help."""
    flaky = receiver[0]
    await _logout(idp, browser)
    await _settled(flaky, 1)
    assert (len(flaky.attempts), flaky.accepted) == (1, [])


async def test_a_client_that_was_down_gets_the_retry(tmp_path: Path, browser: Browser) -> None:
    """The client's endpoint refuses connections at the first delivery (it is restarting), then comes up."""
    flaky = FlakyReceiver(failures=0)
    sock = bound_socket()  # bound, not listening yet: connections are refused
    uri = f"http://127.0.0.1:{sock.getsockname()[1]}/backchannel"
    with running_devidp(tmp_path / "keys", (client(backchannel_logout_uri=uri),)) as idp:
        await _logout(idp, browser)
        with serve(flaky.app, sock=sock):
            await _settled(flaky, 1)
    assert len(flaky.attempts) == 1
    assert len(flaky.accepted) == 1


async def test_stopping_the_idp_abandons_pending_retries(
    tmp_path: Path, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backchannel, "RETRY_DELAYS", (1.0,))  # longer than the IdP takes to stop
    flaky = FlakyReceiver(failures=100)
    with serve(flaky.app) as url:
        registration = client(backchannel_logout_uri=f"{url}/backchannel")
        with running_devidp(tmp_path / "keys", (registration,)) as idp:
            await _logout(idp, browser)
        await asyncio.sleep(1.5)
    assert len(flaky.attempts) == 1  # the IdP stopped before the retry was due
