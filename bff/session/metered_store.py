"""``MeteredStore``: any ``SessionStore`` with each call timed and each failure counted, wrapped in ``app.py``.

One observation of ``bff_store_operation_duration_seconds{operation}`` per call, failed or not, and one count of
``bff_store_errors_total{operation}`` per call that raised ``SessionStoreUnavailable`` (the store's one failure,
``bff.session.store``); a retry inside a store's call (the Redis store retries a dead connection once) is part of
that call. ``operation`` is the method's name: the seam is the closed set of label values. Other exceptions (a
cancelled caller, a bug) are timed but are not store errors.

``get_and_touch`` is the exception: every proxied request sends it, so it is metered inline where it is awaited
(``SessionManager.load_key``: two clock reads and an observation), not through a second coroutine here, and this
wrapper hands it through untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from time import perf_counter
from typing import TypeVar

from bff.errors import SessionStoreUnavailable
from bff.session.store import SessionStore
from bff.telemetry import metrics
from bff.telemetry.metrics import CounterChild, HistogramChild

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Meter:
    duration: HistogramChild
    errors: CounterChild


def meter(operation: str) -> _Meter:
    """The pre-bound children of one operation (``metrics.STORE_OPERATIONS``)."""
    return _Meter(metrics.STORE_DURATION.labels(operation=operation), metrics.STORE_ERRORS.labels(operation=operation))


class MeteredStore:
    """A ``SessionStore`` that meters ``inner``'s calls (see the module docstring) and otherwise is ``inner``."""

    def __init__(self, inner: SessionStore) -> None:
        self.inner = inner
        self._get = meter("get")
        self._set = meter("set")
        self._set_if_absent = meter("set_if_absent")
        self._compare_and_set = meter("compare_and_set")
        self._touch = meter("touch")
        self._ttl = meter("ttl")
        self._take = meter("take")
        self._delete = meter("delete")
        self._index_add = meter("index_add")
        self._index_remove = meter("index_remove")
        self._index_members = meter("index_members")
        self._lock = meter("lock")
        self._extend_lock = meter("extend_lock")
        self._unlock = meter("unlock")
        self._ping = meter("ping")
        # Metered by its caller on the per-request path (module docstring): the inner bound method, no wrapper.
        self.get_and_touch = inner.get_and_touch

    def __repr__(self) -> str:
        return f"MeteredStore({self.inner!r})"

    async def get(self, key: str) -> bytes | None:
        return await _timed(self._get, self.inner.get(key))

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await _timed(self._set, self.inner.set(key, value, ttl))

    async def set_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        return await _timed(self._set_if_absent, self.inner.set_if_absent(key, value, ttl))

    async def compare_and_set(self, key: str, expected: bytes, value: bytes, ttl: float) -> bool:
        return await _timed(self._compare_and_set, self.inner.compare_and_set(key, expected, value, ttl))

    async def touch(self, key: str, ttl: float) -> bool:
        return await _timed(self._touch, self.inner.touch(key, ttl))

    async def ttl(self, key: str) -> float | None:
        return await _timed(self._ttl, self.inner.ttl(key))

    async def take(self, key: str) -> bytes | None:
        return await _timed(self._take, self.inner.take(key))

    async def delete(self, key: str) -> bool:
        return await _timed(self._delete, self.inner.delete(key))

    async def index_add(self, index: str, member: str, ttl: float) -> None:
        await _timed(self._index_add, self.inner.index_add(index, member, ttl))

    async def index_remove(self, index: str, member: str) -> None:
        await _timed(self._index_remove, self.inner.index_remove(index, member))

    async def index_members(self, index: str) -> list[str]:
        return await _timed(self._index_members, self.inner.index_members(index))

    async def lock(self, key: str, ttl: float) -> str | None:
        return await _timed(self._lock, self.inner.lock(key, ttl))

    async def extend_lock(self, key: str, token: str, ttl: float) -> bool:
        return await _timed(self._extend_lock, self.inner.extend_lock(key, token, ttl))

    async def unlock(self, key: str, token: str) -> bool:
        return await _timed(self._unlock, self.inner.unlock(key, token))

    async def ping(self) -> None:
        await _timed(self._ping, self.inner.ping())

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _timed(meter: _Meter, call: Awaitable[T]) -> T:
    start = perf_counter()
    try:
        return await call
    except SessionStoreUnavailable:
        meter.errors.inc()
        raise
    finally:
        meter.duration.observe(perf_counter() - start)
