"""Redis memory per session, and N sessions created, looked up and expired without an O(N) command.

A private ``redis-server`` (nothing else in it). N sessions are created through ``SessionManager``, each for a user
and an IdP session of its own (so each has its own user and ``sid`` index: the worst case), with tokens of
realistic size and entropy: an RS256 JWT access token of ~800 bytes, a 43-byte opaque refresh token and an ~900-byte
ID token, each with its own random identifiers and signature. Memory is ``INFO memory`` ``used_memory`` after
minus before, divided by N.

Then every session is loaded and expired for real in the same pass: each read slides its idle timeout as bff's
requests do, through a manager whose idle timeout is one second, so that Redis itself expires the records (in the
background, and on access); then every session must read as gone, no record may be left, and reading the indexes
of a sample of users prunes them (the last member gone, the index goes). ``INFO commandstats`` must show no
command that walks the keyspace (KEYS, SCAN, ...) and a bounded number of calls per session.

The bytes per session depend on N only through Redis's hash tables (their slots are a power of two, at least the
keys: three per session): N = 25,000 (75,000 keys in 131,072 slots) fills them as 100,000 does (300,000 in
524,288), which is why ``make bench`` uses it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from redis.asyncio import Redis

from bff.config import Secret, SessionSettings
from bff.session.manager import SessionManager
from bff.session.redis_store import RedisStore
from tests.bench.coalescing import CoalescingRedis
from tests.bench.report import Outcome
from tests.support.configs import SESSION_KEY
from tests.support.realistic_tokens import realistic_tokens
from tests.support.redis_server import RedisProcess, command

#: Commands whose cost grows with the keyspace (or that read all of it): never in bff's paths.
O_N_COMMANDS = frozenset({"keys", "scan", "flushdb", "flushall", "randomkey", "dbsize", "debug", "sort"})
#: Sessions in flight at once: their commands share pipelines (``CoalescingRedis``), this many at most in one.
CONCURRENCY = 1000
#: A bound on Redis commands per session over the whole test (create, the sliding read, the read after expiry, the
#: sampled index pruning): ~14, counting those that scripts run (``INFO commandstats`` does). Anything that grew with
#: the number of sessions would blow it.
MAX_CALLS_PER_SESSION = 20


@dataclass(frozen=True)
class MemoryResult:
    sessions: int
    bytes_per_session: float
    access_token_bytes: int
    id_token_bytes: int
    refresh_token_bytes: int
    create_seconds: float
    lookups_found: int
    lookup_seconds: float
    expired: bool
    expiry_seconds: float
    #: The share of the expired records Redis had removed on its own by the end of the wait.
    reclaimed_by_redis: float
    indexes_pruned: bool
    command_calls: dict[str, int]

    @property
    def o_n_commands(self) -> list[str]:
        return sorted(name for name in self.command_calls if name in O_N_COMMANDS)

    @property
    def calls_per_session(self) -> float:
        store_calls = sum(n for name, n in self.command_calls.items() if name not in {"info", "config"})
        return store_calls / self.sessions

    @property
    def correct(self) -> bool:
        return (
            self.lookups_found == self.sessions
            and self.expired
            and self.indexes_pruned
            and not self.o_n_commands
            and self.calls_per_session <= MAX_CALLS_PER_SESSION
        )


class _BatchedStore(RedisStore):
    """bff's store whose redis-py commands go out in pipelines; the per-request GETEX keeps bff's own pipelined
    connection. The commands and their arguments are bff's: only the round trips are fewer."""

    async def coalesce(self) -> None:
        """Pipeline from now on; the index scripts are loaded first, as a running bff has them after its first
        requests (else the first pipeline's EVALSHAs all answer NOSCRIPT and each caller loads the script)."""
        assert isinstance(self._client, Redis)
        for script in (self._index_add, self._index_remove, self._index_members):
            await self._client.script_load(script.script)
        self._client = CoalescingRedis(self._client, batch=CONCURRENCY)


def _info(port: int, section: str) -> str:
    return command(port, "INFO", section).decode()


def used_memory(port: int) -> int:
    match = re.search(r"^used_memory:(\d+)", _info(port, "memory"), re.MULTILINE)
    assert match is not None
    return int(match.group(1))


def key_count(port: int) -> int:
    match = re.search(r"^db0:keys=(\d+)", _info(port, "keyspace"), re.MULTILINE)
    return int(match.group(1)) if match else 0


def command_calls(port: int) -> dict[str, int]:
    """``INFO commandstats``: calls per command (``cmdstat_get:calls=3,...``), subcommands folded in."""
    calls: dict[str, int] = {}
    for name, count in re.findall(r"^cmdstat_([a-z_|-]+):calls=(\d+)", _info(port, "commandstats"), re.MULTILINE):
        base = name.split("|")[0]
        calls[base] = calls.get(base, 0) + int(count)
    return calls


async def _bounded(items: Iterable[Awaitable[None]], limit: int = CONCURRENCY) -> None:
    """Await ``items`` with at most ``limit`` in flight: ``limit`` workers draining one iterator (a semaphore with
    thousands of waiters costs more than the work)."""
    pending = iter(items)

    async def worker() -> None:
        for item in pending:
            await item

    await asyncio.gather(*(worker() for _ in range(limit)))


async def measure(
    redis_binary: str, n: int, *, sample: int = 1000, expiry_wait: float = 10.0, write_format: int = 1
) -> MemoryResult:
    """``write_format``: the store format of the records (``[session] write_format``)."""
    with RedisProcess(redis_binary) as server:
        store = _BatchedStore.from_url(server.url, timeout=30)
        assert isinstance(store, _BatchedStore)
        await store.coalesce()
        try:
            return await _measure(server.port, store, n, sample, expiry_wait, write_format)
        finally:
            await store.aclose()


async def _measure(
    port: int, store: RedisStore, n: int, sample: int, expiry_wait: float, write_format: int
) -> MemoryResult:
    settings = SessionSettings(keys=(Secret(SESSION_KEY),), write_format=write_format)
    sessions = SessionManager(store, settings)
    await store.ping()
    command(port, "CONFIG", "RESETSTAT")
    before = used_memory(port)
    now = int(time.time())
    users = [(f"{uuid.uuid4()}", f"{uuid.uuid4()}") for _ in range(n)]
    ids: list[str] = [""] * n
    example = realistic_tokens(*users[0], now)

    def create(i: int) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            sub, sid = users[i]
            claims = {"sub": sub, "name": "Alice Example", "email": "alice@example.com"}
            ids[i], _ = await sessions.create(sub=sub, sid=sid, claims=claims, tokens=realistic_tokens(sub, sid, now))

        return run

    started = time.perf_counter()
    await _bounded(create(i)() for i in range(n))
    create_seconds = time.perf_counter() - started
    per_session = (used_memory(port) - before) / n

    # Look each session up and expire it for real in one pass: a sliding read (bff's GETEX) through a manager whose
    # idle timeout is one second. Redis reclaims expired keys on its own, in the background (a share of them within
    # the wait), and on access: afterwards every session must read as gone, and then no record may be left.
    found = 0
    keys_before = key_count(port)
    short = SessionManager(store, dataclasses.replace(settings, idle_timeout=1.0))

    async def look_up(session_id: str) -> None:
        nonlocal found
        if await short.load(session_id, slide=True) is not None:
            found += 1

    started = time.perf_counter()
    await _bounded(look_up(session_id) for session_id in ids)
    lookup_seconds = time.perf_counter() - started
    started = time.perf_counter()
    deadline = time.monotonic() + expiry_wait
    while key_count(port) > keys_before - n and time.monotonic() < deadline:  # noqa: ASYNC110 - polling Redis
        await asyncio.sleep(0.1)
    expiry_seconds = time.perf_counter() - started
    reclaimed = (keys_before - key_count(port)) / n
    gone = 0

    async def check_gone(session_id: str) -> None:
        nonlocal gone
        if await sessions.load(session_id) is None:
            gone += 1

    await _bounded(check_gone(session_id) for session_id in ids)
    expired = gone == n and key_count(port) == keys_before - n
    # Reading a user's index prunes the members that expired; an emptied index is deleted.
    subs = [users[i][0] for i in range(0, n, max(1, n // sample))]
    pruned_before = key_count(port)
    remaining = [await sessions.keys_for_sub(sub) for sub in subs]
    indexes_pruned = not any(remaining) and key_count(port) == pruned_before - len(subs)
    return MemoryResult(
        sessions=n,
        bytes_per_session=per_session,
        access_token_bytes=len(example.access_token),
        id_token_bytes=len(example.id_token or ""),
        refresh_token_bytes=len(example.refresh_token or ""),
        create_seconds=create_seconds,
        lookups_found=found,
        lookup_seconds=lookup_seconds,
        expired=expired,
        expiry_seconds=expiry_seconds,
        reclaimed_by_redis=reclaimed,
        indexes_pruned=indexes_pruned,
        command_calls=command_calls(port),
    )


MAX_SESSION_BYTES = 2048


def memory_outcomes(memory: MemoryResult) -> list[Outcome]:
    return [
        Outcome(
            f"Redis: <= {MAX_SESSION_BYTES:,} B per session, indexes included",
            f"{memory.bytes_per_session:,.0f} B",
            memory.bytes_per_session <= MAX_SESSION_BYTES,
        ),
        Outcome(
            f"Redis: {memory.sessions:,} sessions created, looked up, expired; no O(N) command",
            f"{memory.lookups_found:,} found; expired: {'yes' if memory.expired else 'no'}; indexes pruned: "
            f"{'yes' if memory.indexes_pruned else 'no'}; O(N) commands: {', '.join(memory.o_n_commands) or 'none'}; "
            f"{memory.calls_per_session:.1f} commands/session",
            memory.correct,
            "check",
        ),
    ]
