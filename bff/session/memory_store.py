"""The embedded session store: one process, one dict, TTLs read from the injected clock.

The default when no Redis is configured. It keeps Redis's semantics (one keyspace of byte values and sets, TTLs in
seconds, a TTL <= 0 deletes/never stores) so that ``tests/session/test_store_contract.py`` holds for both stores.

Expiry works like Redis's (https://redis.io/docs/latest/commands/expire/#how-redis-expires-keys): a key is gone for
readers the moment its deadline passes, and memory is reclaimed by a sweep that never scans the whole keyspace.
Every deadline a key is given is pushed onto a min-heap; each call first pops the deadlines that have passed and
deletes the keys whose *current* deadline has passed (O(log N) per expired key, amortised). A key that was touched
or replaced leaves its old heap item behind; such stale items are skipped when popped, and the heap is rebuilt from
the live keys when stale items outnumber them, so the heap stays O(live keys) however often sessions slide.

Invariant: each live key's current deadline is in the heap, so after the sweep every key in ``_entries`` is live.

Each method runs to completion without awaiting, so it is atomic on the event loop with no lock, and it never
blocks: there is no I/O.
"""

from __future__ import annotations

import heapq
import secrets
from dataclasses import dataclass
from typing import TypeAlias

from bff.errors import SessionStoreUnavailable
from bff.types import Clock, system_clock

# Rebuild the heap when it holds more than twice the live keys plus this slack (keeps small stores from rebuilding
# on every touch).
_HEAP_SLACK = 64

# Spelled at module level: inside MemoryStore, ``set`` is the method.
_Members: TypeAlias = set[str]


@dataclass(slots=True)
class _Entry:
    value: bytes | _Members
    expires_at: float


class MemoryStore:
    """A ``SessionStore`` in this process's memory. Sessions do not survive a restart and are not shared between
    processes: use ``RedisStore`` when running more than one worker."""

    def __init__(self, clock: Clock = system_clock) -> None:
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._deadlines: list[tuple[float, str]] = []
        self._closed = False

    async def get(self, key: str) -> bytes | None:
        self._sweep()
        entry = self._entries.get(key)
        return None if entry is None else _value(key, entry)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        now = self._sweep()
        if ttl <= 0:
            self._entries.pop(key, None)
        else:
            self._put(key, bytes(value), now + ttl)

    async def set_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        now = self._sweep()
        if ttl <= 0 or key in self._entries:
            return False
        self._put(key, bytes(value), now + ttl)
        return True

    async def compare_and_set(self, key: str, expected: bytes, value: bytes, ttl: float) -> bool:
        now = self._sweep()
        entry = self._entries.get(key)
        if entry is None or _value(key, entry) != expected:
            return False
        if ttl <= 0:
            del self._entries[key]
        else:
            self._put(key, bytes(value), now + ttl)
        return True

    async def touch(self, key: str, ttl: float) -> bool:
        now = self._sweep()
        entry = self._entries.get(key)
        if entry is None:
            return False
        self._retime(key, entry, now, ttl)
        return True

    async def get_and_touch(self, key: str, ttl: float) -> bytes | None:
        now = self._sweep()
        entry = self._entries.get(key)
        if entry is None:
            return None
        value = _value(key, entry)  # like GETEX, a key of the wrong type raises and is left alone
        self._retime(key, entry, now, ttl)
        return value

    async def ttl(self, key: str) -> float | None:
        now = self._sweep()
        entry = self._entries.get(key)
        return None if entry is None else entry.expires_at - now

    async def take(self, key: str) -> bytes | None:
        self._sweep()
        entry = self._entries.get(key)
        if entry is None:
            return None
        value = _value(key, entry)  # like GETDEL, a key of the wrong type raises and stays
        del self._entries[key]
        return value

    async def delete(self, key: str) -> bool:
        self._sweep()
        return self._entries.pop(key, None) is not None

    async def index_add(self, index: str, member: str, ttl: float) -> None:
        now = self._sweep()
        if ttl <= 0:
            return
        entry = self._entries.get(index)
        if entry is None:
            self._put(index, {member}, now + ttl)
            return
        _members(index, entry).add(member)
        if now + ttl > entry.expires_at:
            self._expire(index, entry, now + ttl)

    async def index_remove(self, index: str, member: str) -> None:
        self._sweep()
        entry = self._entries.get(index)
        if entry is None:
            return
        members = _members(index, entry)
        members.discard(member)
        if not members:  # Redis deletes a set when its last member goes; so do we
            del self._entries[index]

    async def index_members(self, index: str) -> list[str]:
        self._sweep()
        entry = self._entries.get(index)
        return [] if entry is None else list(_members(index, entry))

    async def lock(self, key: str, ttl: float) -> str | None:
        now = self._sweep()
        if ttl <= 0 or key in self._entries:
            return None
        token = secrets.token_urlsafe(16)
        self._put(key, token.encode(), now + ttl)
        return token

    async def extend_lock(self, key: str, token: str, ttl: float) -> bool:
        now = self._sweep()
        entry = self._entries.get(key)
        if entry is None or entry.value != token.encode():
            return False
        self._retime(key, entry, now, ttl)
        return True

    async def unlock(self, key: str, token: str) -> bool:
        self._sweep()
        entry = self._entries.get(key)
        if entry is None or entry.value != token.encode():
            return False
        del self._entries[key]
        return True

    async def ping(self) -> None:
        self._sweep()

    async def aclose(self) -> None:
        self._closed = True
        self._entries.clear()
        self._deadlines.clear()

    def _sweep(self) -> float:
        """Refuse calls after ``aclose``, drop every key whose deadline has passed, and return the current time."""
        if self._closed:
            raise SessionStoreUnavailable("session store is closed")
        now = self._clock()
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            _, key = heapq.heappop(heap)
            entry = self._entries.get(key)
            if entry is not None and entry.expires_at <= now:  # else: a stale item; the key lives on
                del self._entries[key]
        return now

    def _put(self, key: str, value: bytes | _Members, expires_at: float) -> None:
        entry = _Entry(value, expires_at)
        self._entries[key] = entry
        self._schedule(key, expires_at)

    def _retime(self, key: str, entry: _Entry, now: float, ttl: float) -> None:
        """A new TTL for a live entry; a TTL of zero or less deletes it at once (as Redis's PEXPIRE does)."""
        if ttl <= 0:
            del self._entries[key]
        else:
            self._expire(key, entry, now + ttl)

    def _expire(self, key: str, entry: _Entry, expires_at: float) -> None:
        entry.expires_at = expires_at
        self._schedule(key, expires_at)

    def _schedule(self, key: str, expires_at: float) -> None:
        heapq.heappush(self._deadlines, (expires_at, key))
        if len(self._deadlines) > 2 * len(self._entries) + _HEAP_SLACK:
            # Drop the stale items: O(N) once per N pushes, so O(1) amortised per push.
            self._deadlines = [(e.expires_at, k) for k, e in self._entries.items()]
            heapq.heapify(self._deadlines)


def _value(key: str, entry: _Entry) -> bytes:
    if isinstance(entry.value, set):
        raise TypeError(f"session store key {key!r} holds an index, not a value")
    return entry.value


def _members(key: str, entry: _Entry) -> _Members:
    if not isinstance(entry.value, set):
        raise TypeError(f"session store key {key!r} holds a value, not an index")
    return entry.value
