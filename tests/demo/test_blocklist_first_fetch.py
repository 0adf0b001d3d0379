"""The demo API's first requests after it starts: they all wait for the one blocklist fetch (single flight) and
get their answer, instead of a 503 for every request that arrived while the fetch was on its way."""

from __future__ import annotations

import asyncio

import httpx

from bff.types import Receive, Scope, Send
from bff_devtools.demo.api import DemoApiSettings, create_demo_api
from tests.support.clock import FakeClock
from tests.support.key_server import KeyServer
from tests.support.servers import serve

BOUND = 10
CONCURRENT = 12
#: How long the IdP takes to answer the blocklist request: long enough for every request to arrive meanwhile.
BLOCKLIST_DELAY = 0.4


class SlowBlocklist:
    """The key server, answering ``/blocklist`` after a delay (a real IdP a few hundred ms away)."""

    def __init__(self, keys: KeyServer) -> None:
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/blocklist":
            await asyncio.sleep(BLOCKLIST_DELAY)
        await self.keys.app(scope, receive, send)


async def _first_requests(keys: KeyServer, clock: FakeClock, revoked: str | None = None) -> list[httpx.Response]:
    settings = DemoApiSettings(issuer=keys.issuer, tick_interval=0.3, max_slow=0.5, jwks_min_refetch_interval=10.0)
    with serve(create_demo_api(settings, clock=clock), lifespan="on") as url:
        async with httpx.AsyncClient(timeout=BOUND) as http:
            tokens = [keys.mint(jti=revoked if revoked and i % 2 else f"jti-{i}") for i in range(CONCURRENT)]
            requests = (http.get(url + "/me", headers={"Authorization": f"Bearer {t}"}) for t in tokens)
            return await asyncio.wait_for(asyncio.gather(*requests), BOUND)


async def test_concurrent_first_requests_wait_for_the_one_blocklist_fetch() -> None:
    clock = FakeClock()
    keys = KeyServer(clock)
    with serve(SlowBlocklist(keys)) as url:
        keys.issuer = url
        responses = await _first_requests(keys, clock)
    assert [r.status_code for r in responses] == [200] * CONCURRENT, [r.text for r in responses][:3]
    assert keys.blocklist_fetches == 1


async def test_concurrent_first_requests_see_the_revocations_of_the_first_fetch() -> None:
    clock = FakeClock()
    keys = KeyServer(clock)
    keys.revoked["jti-revoked"] = int(clock()) + 300
    with serve(SlowBlocklist(keys)) as url:
        keys.issuer = url
        responses = await _first_requests(keys, clock, revoked="jti-revoked")
    statuses = [r.status_code for r in responses]
    assert statuses == [200 if i % 2 == 0 else 401 for i in range(CONCURRENT)], [r.text for r in responses][:3]
    assert keys.blocklist_fetches == 1


async def test_concurrent_first_requests_all_fail_on_one_failed_fetch() -> None:
    clock = FakeClock()
    keys = KeyServer(clock)
    keys.blocklist_status = 503
    with serve(SlowBlocklist(keys)) as url:
        keys.issuer = url
        responses = await _first_requests(keys, clock)
    assert [r.status_code for r in responses] == [503] * CONCURRENT
    assert keys.blocklist_fetches == 1  # one failed fetch per interval, not one per waiting request
