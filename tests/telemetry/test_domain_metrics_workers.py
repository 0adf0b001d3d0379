"""The domain metrics of a real ``bff serve --workers 2``, read the way an operator reads them: one scrape of the
metrics listener sums both workers. Real traffic: a login, a refresh storm on fresh connections that the kernel
spreads over the workers (the test IdP holds the refresh until every request has read its session, so each one
either makes the refresh or joins one, in its worker or across), an IdP outage and a back-channel logout; every
count is exact."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.bff_process import expire_session_token, serving_bff
from tests.support.bff_process import scrape as scrape_text
from tests.support.browser import Browser
from tests.support.oidc_provider import TestProvider
from tests.support.redis_server import RedisProcess

XHR = {"X-CSRF": "1"}
#: Longest wait for the workers' snapshots (written every second) to show in a scrape; only a failure waits this long.
BOUND = 15.0
STORM = 8


def scrape(metrics_port: int) -> dict[str, dict[str, float]]:
    """The samples of the domain families: sample name -> {the one label's value (or ""): value}."""
    text = scrape_text(metrics_port)
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(("bff_token_refresh", "bff_sessions", "bff_login", "bff_store_operation")):
                key = next(iter(sample.labels.values()), "") if len(sample.labels) <= 1 else str(sample.labels)
                out.setdefault(sample.name, {})[key] = sample.value
    return out


def until(metrics_port: int, done: Callable[[dict[str, dict[str, float]]], bool]) -> dict[str, dict[str, float]]:
    deadline = time.monotonic() + BOUND
    while True:
        samples = scrape(metrics_port)
        if done(samples):
            return samples
        if time.monotonic() > deadline:
            pytest.fail(f"the scrape never got there: {samples}")
        time.sleep(0.1)


def nonzero(samples: dict[str, dict[str, float]], name: str) -> dict[str, float]:
    return {key: value for key, value in samples.get(name, {}).items() if value}


def test_two_workers_count_the_token_lifecycle_exactly(
    tmp_path: Path, redis_process: RedisProcess, idp: TestProvider, ok_upstream: str
) -> None:
    with serving_bff(
        tmp_path,
        redis_url=redis_process.url,
        provider=idp,
        upstream=ok_upstream,
        args=["--workers", "2"],
        metrics=True,
    ) as bff:
        metrics_port, config, origin = bff.metrics_port, bff.config, bff.url
        asyncio.run(_traffic(origin, metrics_port, redis_process.url, config, idp))
        refreshes = {"ok": 1, "joined": STORM - 1, "idp_unavailable": 1}
        samples = until(
            metrics_port,
            lambda s: (
                nonzero(s, "bff_sessions_ended_total") == {"backchannel": 1}
                and sum(nonzero(s, "bff_token_refresh_total").values()) == STORM + 1
            ),
        )
        assert nonzero(samples, "bff_login_total") == {"ok": 1}
        assert nonzero(samples, "bff_sessions_created_total") == {"": 1}
        assert nonzero(samples, "bff_token_refresh_total") == refreshes
        assert nonzero(samples, "bff_token_refresh_duration_seconds_count") == {"": STORM + 1}


async def _traffic(origin: str, metrics_port: int, redis_url: str, config: Path, provider: TestProvider) -> None:
    browser = Browser()
    try:
        await browser.follow(f"{origin}/bff/login")
        cookie = browser.cookies(origin)["__Host-bff"]
        headers = {**XHR, "cookie": f"__Host-bff={cookie}"}
        await expire_session_token(redis_url, config, cookie)
        reads = await asyncio.to_thread(
            until, metrics_port, lambda s: "bff_store_operation_duration_seconds_count" in s
        )
        before = reads["bff_store_operation_duration_seconds_count"].get("get_and_touch", 0.0)

        # The storm: fresh connections, so the kernel spreads them over both workers.
        gate = threading.Event()
        provider.token_gate = gate
        clients = [httpx.AsyncClient(timeout=20) for _ in range(STORM)]
        try:
            sent = [asyncio.ensure_future(c.get(f"{origin}/api/items", headers=headers)) for c in clients]
            try:
                await asyncio.to_thread(
                    until,
                    metrics_port,
                    lambda s: s["bff_store_operation_duration_seconds_count"].get("get_and_touch") == before + STORM,
                )
            finally:
                gate.set()
                provider.token_gate = None
            answers = await asyncio.gather(*sent)
        finally:
            for client in clients:
                await client.aclose()
        assert [a.status_code for a in answers] == [200] * STORM
        assert provider.refresh_calls == 1

        # An IdP outage: the refresh fails, the session stays.
        await expire_session_token(redis_url, config, cookie)
        provider.fail_token_endpoint_with = 502
        assert (await browser.http.get(f"{origin}/api/items", headers=headers)).status_code == 503
        provider.fail_token_endpoint_with = None

        # The IdP ends the session over the back channel.
        logout = await browser.http.post(
            f"{origin}/bff/backchannel-logout",
            content=f"logout_token={provider.mint_logout_token()}".encode(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert logout.status_code == 200
    finally:
        await browser.aclose()
