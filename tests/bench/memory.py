"""The worker's memory: its resident set (``/proc/PID/status`` VmRSS) grown by idle keep-alive connections and by
active sessions, each divided by their count.

* Idle keep-alive connections: ``n`` connections each send one proxied request and stay open, idle (the server's
  ``keep_alive_timeout`` must outlast the measurement). A first batch, opened and closed before, warms the code
  paths and the allocator, so what grows after is what the open connections hold.
* Active sessions: ``n`` sessions each make one request (bff decodes each and memoises up to ``DECODED_CACHE_SIZE``
  of them), after a first batch of other sessions did the same.

The RSS is read once the worker has answered everything (a short settle), so it counts what stays, not transient
buffers. The load comes from this process through httpx, which keeps every connection of its pool open.
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.bench.report import Outcome, Run
from tests.bench.servers import API_PATH, COOKIE_NAME, Bff
from tests.bench.wrk import WrkResult

#: File descriptors the benchmark and its children may open: 2,000 connections each side of loopback, and more.
NOFILE = 16_384
_SETTLE = 0.5


def raise_file_limit(wanted: int = NOFILE) -> int:
    """Raise this process's open-files limit (its children inherit it) to ``wanted``, or as far as allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(hard, target)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_bytes(pid: int) -> int:
    """The resident set of ``pid`` in bytes (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


@dataclass(frozen=True)
class Growth:
    """How much the worker's RSS grew for ``count`` things (connections or sessions) that stayed."""

    what: str
    count: int
    before: int
    after: int
    failures: int

    @property
    def per_item(self) -> float:
        return (self.after - self.before) / self.count if self.count else 0.0

    def describe(self) -> str:
        return (
            f"{self.per_item / 1024:.1f} KB per {self.what} ({self.count:,} of them: RSS "
            f"{self.before / 2**20:.1f} -> {self.after / 2**20:.1f} MiB"
            + (f"; {self.failures} requests failed" if self.failures else "")
            + ")"
        )


async def _requests(http: httpx.AsyncClient, url: str, headers: Sequence[Mapping[str, str]]) -> int:
    """One GET per header set, all at once; how many did not answer 200."""
    answers = await asyncio.gather(*(http.get(url, headers=dict(h)) for h in headers), return_exceptions=True)
    return sum(1 for a in answers if not isinstance(a, httpx.Response) or a.status_code != 200)


async def idle_connections(url: str, headers: Mapping[str, str], pid: int, count: int) -> Growth:
    """RSS growth of ``pid`` per idle keep-alive connection, ``count`` of them open at once."""
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count, keepalive_expiry=None)
    timeout = httpx.Timeout(60, pool=60)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as warm:
        failures = await _requests(warm, url, [headers] * min(count, 200))
    await asyncio.sleep(_SETTLE)
    before = rss_bytes(pid)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
        failures += await _requests(http, url, [headers] * count)
        await asyncio.sleep(_SETTLE)  # every connection open and idle
        after = rss_bytes(pid)
    return Growth("idle keep-alive connection", count, before, after, failures)


async def active_sessions(url: str, cookie_name: str, cookies: Sequence[str], pid: int, warm: int) -> Growth:
    """RSS growth of ``pid`` per session used once: the first ``warm`` cookies warm up, the rest are counted."""
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)

    def headers(values: Sequence[str]) -> list[dict[str, str]]:
        return [{"Cookie": f"{cookie_name}={value}", "X-CSRF": "1"} for value in values]

    async with httpx.AsyncClient(limits=limits, timeout=60) as http:
        failures = await _requests(http, url, headers(cookies[:warm]))
        await asyncio.sleep(_SETTLE)
        before = rss_bytes(pid)
        failures += await _requests(http, url, headers(cookies[warm:]))
        await asyncio.sleep(_SETTLE)
        after = rss_bytes(pid)
    return Growth("active session", len(cookies) - warm, before, after, failures)


#: The worker's memory per idle keep-alive connection may be at most this many bytes.
MAX_CONNECTION_BYTES = 10 * 1024


@dataclass(frozen=True)
class WorkerMemory:
    connections: Growth
    sessions: Growth
    #: wrk with ``connections.count`` connections open at once: the latency with many clients connected.
    run: Run

    def outcomes(self, *, smoke: bool) -> list[Outcome]:
        bound = f"{MAX_CONNECTION_BYTES // 1024} KB"
        return [
            Outcome(
                f"worker memory: <= {bound} per idle keep-alive connection",
                self.connections.describe(),
                self.connections.per_item <= MAX_CONNECTION_BYTES,
            ),
            Outcome(
                "worker memory per active session (reported; no target)",
                self.sessions.describe(),
                None,
                note="no target",
            ),
            Outcome(
                f"every request of the memory measurements and of the {self.connections.count:,}-connection run "
                "answered 2xx",
                f"{self.connections.failures + self.sessions.failures + self.run.result.failures} failed",
                self.connections.failures + self.sessions.failures + self.run.result.failures == 0,
                "check",
            ),
        ]


async def measure(
    bff: Bff, *, connections: int, sessions: int, warm: int, load: Callable[[int], WrkResult]
) -> WorkerMemory:
    """``bff`` (one worker, its ``keep_alive_timeout`` above a few seconds): RSS per idle connection, per active
    session (``sessions`` of them after ``warm`` others), then ``load(connections)``: wrk with that many open."""
    idle = await idle_connections(bff.url + API_PATH, bff.headers, bff.process.pid, connections)
    cookies = await bff.create_sessions(warm + sessions)
    active = await active_sessions(bff.url + API_PATH, COOKIE_NAME, cookies, bff.process.pid, warm)
    name = f"bff, 1 worker, valid session, {connections:,} connections open"
    return WorkerMemory(idle, active, Run(name, load(connections)))
