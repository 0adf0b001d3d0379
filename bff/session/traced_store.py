"""``TracedStore``: any :class:`~bff.session.store.SessionStore` with a CLIENT span per operation.

Chosen in the composition root only when tracing is on, so a process without tracing calls its store directly.
A span names the operation and the backend (``db.operation.name``, ``db.system.name``), never a key: keys are
digests of session ids, login states and subjects.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from bff.session.store import SessionStore
from bff.telemetry.spans import AttributeValue, Span, Spans


class TracedStore:
    """Delegates every :class:`SessionStore` method, each inside a span ``store {operation}``."""

    def __init__(self, store: SessionStore, spans: Spans, *, system: str) -> None:
        self.inner = store
        self._spans = spans
        self._system = system

    def _span(self, operation: str) -> AbstractContextManager[Span]:
        attributes: dict[str, AttributeValue] = {"db.system.name": self._system, "db.operation.name": operation}
        return self._spans.span(f"store {operation}", "client", attributes)

    async def get(self, key: str) -> bytes | None:
        with self._span("get"):
            return await self.inner.get(key)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        with self._span("set"):
            await self.inner.set(key, value, ttl)

    async def set_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        with self._span("set_if_absent"):
            return await self.inner.set_if_absent(key, value, ttl)

    async def compare_and_set(self, key: str, expected: bytes, value: bytes, ttl: float) -> bool:
        with self._span("compare_and_set"):
            return await self.inner.compare_and_set(key, expected, value, ttl)

    async def touch(self, key: str, ttl: float) -> bool:
        with self._span("touch"):
            return await self.inner.touch(key, ttl)

    async def get_and_touch(self, key: str, ttl: float) -> bytes | None:
        with self._span("get_and_touch"):
            return await self.inner.get_and_touch(key, ttl)

    async def ttl(self, key: str) -> float | None:
        with self._span("ttl"):
            return await self.inner.ttl(key)

    async def take(self, key: str) -> bytes | None:
        with self._span("take"):
            return await self.inner.take(key)

    async def delete(self, key: str) -> bool:
        with self._span("delete"):
            return await self.inner.delete(key)

    async def index_add(self, index: str, member: str, ttl: float) -> None:
        with self._span("index_add"):
            await self.inner.index_add(index, member, ttl)

    async def index_remove(self, index: str, member: str) -> None:
        with self._span("index_remove"):
            await self.inner.index_remove(index, member)

    async def index_members(self, index: str) -> list[str]:
        with self._span("index_members"):
            return await self.inner.index_members(index)

    async def lock(self, key: str, ttl: float) -> str | None:
        with self._span("lock"):
            return await self.inner.lock(key, ttl)

    async def extend_lock(self, key: str, token: str, ttl: float) -> bool:
        with self._span("extend_lock"):
            return await self.inner.extend_lock(key, token, ttl)

    async def unlock(self, key: str, token: str) -> bool:
        with self._span("unlock"):
            return await self.inner.unlock(key, token)

    async def ping(self) -> None:
        with self._span("ping"):
            await self.inner.ping()

    async def aclose(self) -> None:
        await self.inner.aclose()
