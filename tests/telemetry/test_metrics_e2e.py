"""A real ``bff serve --workers 2`` with ``[metrics] listen``, a real test OpenID Provider, Redis and upstream: after
real traffic one scrape of the metrics listener holds the exact sums over both workers; a worker killed outright
(SIGKILL, uvicorn starts another) loses none of its flushed counts and none is counted twice; open connections are
the live sum; the listener is not reachable through the public origin."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.bff_process import scrape as scrape_text
from tests.support.bff_process import serving_bff, wait_ready
from tests.support.browser import Browser
from tests.support.oidc_provider import TestProvider
from tests.support.redis_server import RedisProcess

XHR = {"X-CSRF": "1"}
#: Longest wait for a worker's snapshot (written every second) to show in a scrape; only a failure waits this long.
BOUND = 15.0
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(metrics_port: int) -> Samples:
    text = scrape_text(metrics_port)
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def server(route: str, status: int, method: str = "GET") -> tuple[str, frozenset[tuple[str, str]]]:
    labels = {"http_request_method": method, "http_route": route, "http_response_status_code": str(status)}
    return "http_server_request_duration_seconds_count", frozenset(labels.items())


def until(metrics_port: int, done: Callable[[Samples], bool]) -> Samples:
    """Scrape until ``done`` holds (the workers flush once a second); fails after BOUND seconds."""
    deadline = time.monotonic() + BOUND
    while True:
        samples = scrape(metrics_port)
        if done(samples):
            return samples
        if time.monotonic() > deadline:
            pytest.fail(f"the scrape never got there: { {k: v for k, v in samples.items() if 'count' in k[0]} }")
        time.sleep(0.1)


def workers(supervisor: int) -> set[int]:
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return {int(pid) for pid in children if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()}


async def login_and_call(origin: str, calls: int) -> None:
    browser = Browser()
    try:
        await browser.follow(f"{origin}/bff/login")
        for _ in range(calls):
            assert (await browser.get(f"{origin}/api/items?secret=x", headers=XHR)).status_code == 200
        for _ in range(2):
            assert (await browser.get(f"{origin}/api/items")).status_code == 401  # no X-CSRF
        assert (await browser.get(f"{origin}/nowhere/at/all")).status_code == 404
        assert (await browser.request("PROPFIND", f"{origin}/api/items", headers=XHR)).status_code == 405
    finally:
        await browser.aclose()


def test_one_scrape_sums_the_workers_exactly(
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
        port, metrics_port, process, log, origin = bff.port, bff.metrics_port, bff.process, bff.log, bff.url
        asyncio.run(login_and_call(origin, 6))
        api_ok = server("/api", 200)
        # The login ends on "/" (no frontend here: 404, unmatched), then one path of no route.
        samples = until(metrics_port, lambda s: s.get(api_ok) == 6 and s.get(server("unmatched", 404)) == 2)
        assert samples[server("/api", 401)] == 2
        assert samples[server("/api", 405, "_OTHER")] == 1
        assert samples[server("/bff/login", 302)] == 1
        assert samples[server("/bff/callback", 302)] == 1
        upstream_address = ok_upstream.removeprefix("http://")
        client = {
            "server_address": upstream_address,
            "http_request_method": "GET",
            "http_response_status_code": "200",
            "bff_route": "/api",
        }
        assert samples["http_client_request_duration_seconds_count", frozenset(client.items())] == 6
        assert not any("secret" in str(key) or "nowhere" in str(key) for key in samples)
        assert [v for (name, _), v in samples.items() if name == "bff_build_info"] == [1]

        # A worker dies without a word; uvicorn starts another. Its flushed counts stay, once.
        before = workers(process.pid)
        assert len(before) == 2
        os.kill(next(iter(before)), signal.SIGKILL)
        deadline = time.monotonic() + BOUND
        while len(workers(process.pid) - before) < 1 or len(workers(process.pid)) < 2:
            assert time.monotonic() < deadline, "uvicorn did not replace the killed worker"
            time.sleep(0.1)
        wait_ready(port, process, log)
        asyncio.run(login_and_call(origin, 4))
        samples = until(metrics_port, lambda s: s.get(api_ok) == 10)
        assert samples[server("/api", 401)] == 4
        assert samples[server("/bff/callback", 302)] == 2
        time.sleep(2.5)  # two more flushes of every worker: still exact, nothing added twice
        assert scrape(metrics_port)[api_ok] == 10

        # Open connections: the live sum (the dead worker's last value is not in it).
        sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        try:
            until(metrics_port, lambda s: s.get(("bff_connections_open", frozenset())) == 3)
        finally:
            for sock in sockets:
                sock.close()
        until(metrics_port, lambda s: s.get(("bff_connections_open", frozenset())) == 0)

        # The public origin does not serve the metrics.
        assert httpx.get(f"{origin}/metrics").status_code == 404


def test_one_process_serves_its_live_values(
    tmp_path: Path, redis_process: RedisProcess, idp: TestProvider, ok_upstream: str
) -> None:
    with serving_bff(tmp_path, redis_url=redis_process.url, provider=idp, upstream=ok_upstream, metrics=True) as bff:
        port, metrics_port = bff.port, bff.metrics_port
        for _ in range(3):
            assert httpx.get(f"http://127.0.0.1:{port}/api/x", headers=XHR).status_code == 401  # no session
        samples = scrape(metrics_port)  # no flush interval in one process: the values are read live
        assert samples[server("/api", 401)] == 3
