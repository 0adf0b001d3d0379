"""Operational refusals of the proxy are logged, without flooding: a Redis outage under load gives one line when
it starts (naming the cause), a count per interval while it lasts and one line when it is over, whatever the
number of requests refused."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import httpx
import pytest

from bff.proxy import outage_log
from tests.support.browser import Browser
from tests.support.redis_server import RedisProcess
from tests.support.stack import running_stack

BOUND = 10.0
INTERVAL = 0.3
OUTAGE = 1.5
XHR = {"X-CSRF": "1"}
_COUNT = re.compile(r"(\d+) more requests? answered 503")


def _route(upstream: str) -> Any:
    def customize(doc: dict[str, Any]) -> None:
        doc["routes"] = [{"path": "/api", "upstream": upstream, "token": "user"}]

    return customize


async def test_a_redis_outage_is_logged_in_a_bounded_number_of_lines(
    redis_process: RedisProcess, ok_upstream: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outage_log, "OUTAGE_LOG_INTERVAL", INTERVAL)
    caplog.set_level(logging.WARNING, logger="bff.proxy")
    with running_stack(redis_url=redis_process.url, customize=_route(ok_upstream)) as stack:
        browser = Browser()
        try:
            await asyncio.wait_for(browser.follow(f"{stack.url}/bff/login"), BOUND)
            cookie = browser.cookies(stack.url)["__Host-bff"]
        finally:
            await browser.aclose()
        headers = {**XHR, "cookie": f"__Host-bff={cookie}"}
        async with httpx.AsyncClient(timeout=BOUND) as http:
            assert (await http.get(f"{stack.url}/api/items", headers=headers)).status_code == 200
            redis_process.stop()
            statuses: list[int] = []
            started = time.monotonic()
            while time.monotonic() - started < OUTAGE:
                batch = [http.get(f"{stack.url}/api/items", headers=headers) for _ in range(20)]
                statuses += [r.status_code for r in await asyncio.wait_for(asyncio.gather(*batch), BOUND)]
            duration = time.monotonic() - started
            await asyncio.sleep(INTERVAL * 3)  # one quiet interval ends the outage in the log
    assert set(statuses) == {503}
    lines = [r.getMessage() for r in caplog.records if r.name == "bff.proxy"]
    assert lines, "the outage was not logged"
    assert "SessionStoreUnavailable" in lines[0]
    assert "session store" in lines[0]
    # One line to start, one per interval while it lasts (give or take one for timing), one to end.
    assert len(lines) <= 2 + duration / INTERVAL + 2, lines
    assert len(statuses) > 4 * len(lines)  # far fewer lines than refusals
    counted = sum(int(m.group(1)) for line in lines if (m := _COUNT.search(line)))
    assert counted + 1 == len(statuses), lines  # every refusal is accounted for
    assert "over" in lines[-1]
    assert all(cookie not in line for line in lines)
    assert all(r.levelno == logging.WARNING for r in caplog.records if r.name == "bff.proxy")
