"""``DecodedMemo``: the session records a worker decoded last, each checked against the store's bytes on every read.

Decrypting (AES-256-GCM), inflating and parsing a record is most of a proxied request's CPU when the session is not
the one decoded last. The memo keeps, per store key, the exact encrypted bytes it decoded and what they decoded to.
The store is always asked first (``SessionManager.load_key``), so the memo never answers for a record that is gone
(deleted or ended on any instance, expired in the store); it answers only when the store returned byte for byte
what it decoded before. Every write encrypts with a fresh nonce, so a record that changed anywhere (refresh, logout,
compare-and-set on another instance) has other bytes, is decoded again and replaces the entry. What it returns is
exactly what decoding again would (sessions are immutable); the caller checks expiry after it, every time.

Memory is bounded by an estimate of each entry's size (the record bytes kept, plus twice its decoded text for the
objects built from it, plus a fixed overhead): the least recently used entries leave first, and an entry larger than
the whole budget is not kept.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

#: Per-entry bytes beyond the record and its text: the entry, the key string, the dataclasses and dicts built.
ENTRY_OVERHEAD = 1024


class DecodedMemo(Generic[T]):
    """``decode(key, raw) -> (value, decoded text length)`` memoised per store key, at most ``budget`` bytes."""

    def __init__(self, decode: Callable[[str, bytes], tuple[T, int]], budget: int) -> None:
        self._decode = decode
        self._budget = budget
        self._entries: OrderedDict[str, tuple[bytes, T, int]] = OrderedDict()
        self._size = 0

    def __call__(self, key: str, raw: bytes) -> T:
        entry = self._entries.get(key)
        if entry is not None and entry[0] == raw:
            self._entries.move_to_end(key)
            return entry[1]
        value, text_length = self._decode(key, raw)
        self._store(key, raw, value, len(raw) + 2 * text_length + ENTRY_OVERHEAD)
        return value

    def forget(self, key: str) -> None:
        """Drop ``key``'s entry (its record was deleted here: its memory is not kept for a read that cannot hit)."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._size -= entry[2]

    @property
    def budget(self) -> int:
        """The most estimated bytes held."""
        return self._budget

    @property
    def size(self) -> int:
        """The estimated bytes held."""
        return self._size

    def __len__(self) -> int:
        return len(self._entries)

    def _store(self, key: str, raw: bytes, value: T, cost: int) -> None:
        self.forget(key)
        if cost > self._budget:
            return
        self._entries[key] = (raw, value, cost)
        self._size += cost
        while self._size > self._budget:
            _, (_, _, evicted) = self._entries.popitem(last=False)
            self._size -= evicted
