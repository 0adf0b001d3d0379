"""The session store seam: a small byte-level protocol that every store implements.

Implementations: ``memory_store.MemoryStore`` (embedded, one process) and ``redis_store.RedisStore`` (standalone,
Sentinel, Cluster). The same contract suite (``tests/session/test_store_contract.py``) runs against both.

Rules every implementation follows:

* Keys are opaque strings chosen by the ``SessionManager`` (already hashed; never a raw session id).
* TTLs are seconds (float, millisecond precision; a positive TTL is at least 1 ms); a TTL <= 0 deletes/never
  stores. Each method below says what that means for it.
* Values and indexes share one keyspace, as in Redis: a key holds a value or an index, never both.
* Every single-key operation is atomic. No operation is O(number of keys in the store): no KEYS, no SCAN.
* Failures to reach the backend raise ``bff.errors.SessionStoreUnavailable`` (with the cause chained), never a
  backend-specific exception, and never delete anything as a side effect. So does every call after ``aclose``.
* Multi-key atomicity is never assumed (Redis Cluster): each method touches one key.
"""

from __future__ import annotations

from typing import Protocol


class SessionStore(Protocol):
    async def get(self, key: str) -> bytes | None:
        """The value, or None when absent or expired."""

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds, replacing any previous value and TTL."""

    async def set_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        """Store only when ``key`` does not exist (SET NX). True when stored; a TTL <= 0 stores nothing (False)."""

    async def compare_and_set(self, key: str, expected: bytes, value: bytes, ttl: float) -> bool:
        """Replace the value only if the current value equals ``expected`` byte for byte. True when replaced (or,
        with a TTL <= 0, deleted); False when the key is absent or holds something else (then nothing changes)."""

    async def touch(self, key: str, ttl: float) -> bool:
        """Set a new TTL on an existing key (sliding expiry): the TTL is replaced, so it may also shrink; a TTL <= 0
        deletes the key. False when the key does not exist (nothing is created)."""

    async def get_and_touch(self, key: str, ttl: float) -> bytes | None:
        """Read the value and set its TTL to ``ttl`` in one atomic step (``GETEX key PX ttl``): a sliding expiry
        that costs one round trip, not a read and a ``touch``. None when the key is absent (nothing is
        created). A TTL <= 0 returns the value and deletes the key."""

    async def ttl(self, key: str) -> float | None:
        """Remaining seconds to live, or None when the key does not exist (``math.inf`` for a key without TTL, which
        only something other than a store can create)."""

    async def take(self, key: str) -> bytes | None:
        """Atomically read and delete (GETDEL): one-time values such as login state."""

    async def delete(self, key: str) -> bool:
        """Delete; True when something was deleted."""

    async def index_add(self, index: str, member: str, ttl: float) -> None:
        """Add ``member`` to the set ``index``; the set lives at least ``ttl`` more seconds (its TTL only grows).
        A TTL <= 0 adds nothing. The set disappears with its last member."""

    async def index_remove(self, index: str, member: str) -> None:
        """Remove ``member`` from the set ``index`` (no error when absent)."""

    async def index_members(self, index: str) -> list[str]:
        """Every member of the set ``index`` (empty when absent). Sets are per user/IdP session: small."""

    async def lock(self, key: str, ttl: float) -> str | None:
        """Try to take the lock ``key`` with a lease of ``ttl`` seconds. Returns a fresh random owner token, or None
        if held (or if the lease is <= 0). The lock is a value like any other: it ends when its lease runs out."""

    async def extend_lock(self, key: str, token: str, ttl: float) -> bool:
        """Set the lease to ``ttl`` seconds if ``token`` still owns the lock (a TTL <= 0 releases it). False when
        the lock was lost (expired or taken by another owner); then nothing changes."""

    async def unlock(self, key: str, token: str) -> bool:
        """Release the lock if ``token`` owns it. False when it was not held by ``token``."""

    async def ping(self) -> None:
        """Raise SessionStoreUnavailable unless the backend answers."""

    async def aclose(self) -> None:
        """Release connections. The store is unusable afterwards."""
