"""The worker's memory: its resident set (``/proc/PID/status`` VmRSS) grown by idle keep-alive connections and by
active sessions, each divided by their count.

* Idle keep-alive connections: ``n`` connections each send one proxied request and stay open, idle (the server's
  ``keep_alive_timeout`` must outlast the measurement). A first batch, opened and closed before, warms the code
  paths and the allocator, so what grows after is what the open connections hold.
  While they stay open, wrk's usual load runs: its p99 is the latency with that many clients connected.
* Active sessions: ``n`` sessions each make one request (bff decodes each and memoises it, within
  ``DECODED_MEMO_BYTES``), after a first batch of other sessions did the same.

The RSS is read once the worker has answered everything (a short settle), so it counts what stays, not transient
buffers. The load comes from this process, one h11 client per connection (``client.py``).
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import h11

from tests.bench.client import Connection, each_once
from tests.bench.context import ROOT, Context, load_cores, logged_in_bff, wrk
from tests.bench.report import Outcome, Run
from tests.bench.servers import API_PATH, COOKIE_NAME, Bff
from tests.bench.wrk import WrkResult

#: File descriptors the benchmark and its children may open: 2,000 connections each side of loopback, and more.
NOFILE = 16_384
_SETTLE = 0.5
_AT_ONCE = 32
T = TypeVar("T")


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


async def _open(url: str, path: str, headers: Mapping[str, str], count: int) -> tuple[list[Connection], int]:
    """``count`` connections, each with one answered GET, left open; and how many did not answer 200. At most
    ``_AT_ONCE`` requests are in flight, as from clients that came one after another: what stays is what an idle
    connection holds, not the upstream connections a burst of ``count`` requests would open."""
    at_once = asyncio.Semaphore(_AT_ONCE)

    async def one() -> tuple[Connection | None, bool]:
        async with at_once:
            try:
                connection = await Connection.open(url)
                return connection, (await connection.get(path, headers))[0] == 200
            except (OSError, h11.ProtocolError):
                return None, False

    opened = await asyncio.gather(*(one() for _ in range(count)))
    return [c for c, _ in opened if c is not None], sum(1 for _, ok in opened if not ok)


async def idle_connections(
    url: str, path: str, headers: Mapping[str, str], pid: int, count: int, *, while_open: Callable[[], T]
) -> tuple[Growth, T]:
    """RSS growth of ``pid`` per idle keep-alive connection, ``count`` of them open at once; and what
    ``while_open()`` returned, called while they are still open (and idle)."""
    warm, failures = await _open(url, path, headers, min(count, 200))
    for connection in warm:
        connection.close()
    await asyncio.sleep(_SETTLE)
    before = rss_bytes(pid)
    connections, more = await _open(url, path, headers, count)
    try:
        await asyncio.sleep(_SETTLE)  # every connection open and idle
        after = rss_bytes(pid)
        during = while_open()
    finally:
        for connection in connections:
            connection.close()
    return Growth("idle keep-alive connection", count, before, after, failures + more), during


async def active_sessions(url: str, path: str, cookie_name: str, cookies: Sequence[str], pid: int, warm: int) -> Growth:
    """RSS growth of ``pid`` per session used once: the first ``warm`` cookies warm up, the rest are counted."""

    def headers(values: Sequence[str]) -> list[dict[str, str]]:
        return [{"Cookie": f"{cookie_name}={value}", "X-CSRF": "1"} for value in values]

    failures = len(await each_once(url, path, headers(cookies[:warm])))
    await asyncio.sleep(_SETTLE)
    before = rss_bytes(pid)
    failures += len(await each_once(url, path, headers(cookies[warm:])))
    await asyncio.sleep(_SETTLE)
    after = rss_bytes(pid)
    return Growth("active session", len(cookies) - warm, before, after, failures)


#: The worker's memory per idle keep-alive connection may be at most this many bytes.
MAX_CONNECTION_BYTES = 10 * 1024


@dataclass(frozen=True)
class WorkerMemory:
    connections: Growth
    sessions: Growth
    #: wrk's usual load while ``connections.count`` idle connections stay open: the latency with many clients
    #: connected.
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
                f"every request of the memory measurements and of the run with {self.connections.count:,} "
                "connections open answered 2xx",
                f"{self.connections.failures + self.sessions.failures + self.run.result.failures} failed",
                self.connections.failures + self.sessions.failures + self.run.result.failures == 0,
                "check",
            ),
        ]


async def measure(
    bff: Bff, *, connections: int, sessions: int, warm: int, load: Callable[[], WrkResult]
) -> WorkerMemory:
    """``bff`` (one worker, its ``keep_alive_timeout`` above the load's duration): RSS per active session
    (``sessions`` of them after ``warm`` others), then per idle connection, and ``load()`` (wrk) while
    ``connections`` idle ones stay open."""
    cookies = await bff.create_sessions(warm + sessions)
    active = await active_sessions(bff.url, API_PATH, COOKIE_NAME, cookies, bff.process.pid, warm)
    idle, result = await idle_connections(bff.url, API_PATH, bff.headers, bff.process.pid, connections, while_open=load)
    name = f"bff, 1 worker, valid session, {connections:,} more connections open and idle"
    return WorkerMemory(idle, active, Run(name, result))


#: Sessions the worker-memory row touches: each is decoded once and memoised.
MEMORY_SESSIONS = 1_024


async def measure_worker(ctx: Context) -> WorkerMemory:
    """A bff whose idle connections outlive the measurement: its memory per connection and session, and the usual
    wrk load while those connections stay open."""
    mode = ctx.mode
    cores, threads = load_cores(ctx, 1)

    def load() -> WrkResult:
        return wrk(ctx, bff.url + API_PATH, bff.headers, bff.process.pid, cores, threads=threads)

    extra = 'keep_alive_timeout = "120s"'
    async with logged_in_bff(ctx, "bff-memory", workers=1, source=ROOT, server_extra=extra) as bff:
        return await measure(bff, connections=mode.many_connections, sessions=MEMORY_SESSIONS, warm=64, load=load)
