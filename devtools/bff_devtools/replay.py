"""The ``jti`` values a signed client message has used, so that one captured message cannot be replayed: the
request objects of RFC 9101 and the ``private_key_jwt`` assertions of RFC 7523 / OpenID Connect Core 9.

A :class:`ReplayCache` keeps ``(client, jti)`` until the message's ``exp`` plus the allowed clock skew, the time it
could still be accepted (RFC 7523 3 item 7), and no longer. Memory stays bounded under a flood: at most
``capacity`` live entries; when that many are live a new message is refused (:class:`ReplayRefused`) rather
than forgetting a live ``jti`` (which would reopen its replay). Expired entries leave in ``exp`` order through a
heap, so each use costs O(log n). Only messages whose signature verified reach the cache: a flood needs a
registered client's key. The cache lives in the IdP process, as DPoP's does (``dpop_proofs``).

Every check on ``jti`` and ``exp`` is here, the same for both kinds: ``jti`` a string of 1 to
:data:`MAX_JTI` characters, ``exp`` an integer (OpenID Connect Core 9: both REQUIRED), not past, and at most
``max_lifetime`` (plus skew) ahead, so an entry never outlives that.
"""

from __future__ import annotations

import heapq
import threading

#: Longest ``jti`` remembered: the memory of one entry is bounded too.
MAX_JTI = 256


class ReplayRefused(Exception):
    """The message must be refused: no usable ``jti`` or ``exp``, a replay, or a full cache; the message says
    which and never quotes the token."""


class ReplayCache:
    """The used ``jti`` values of one kind of message (``what``, named in errors), bounded by ``capacity``.

    Thread-safe: authlib verifies assertions in worker threads."""

    def __init__(self, what: str, *, max_lifetime: int, skew: int, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._what = what
        self._max_lifetime = max_lifetime
        self._skew = skew
        self._capacity = capacity
        self._lock = threading.Lock()
        self._until: dict[tuple[str, str], int] = {}
        #: ``(until, key)`` of every entry of ``_until``, earliest first.
        self._expiries: list[tuple[int, tuple[str, str]]] = []

    def __len__(self) -> int:
        with self._lock:
            return len(self._until)

    def use(self, client_id: str, jti: object, exp: object, *, now: float) -> None:
        """Accept ``jti`` of ``client_id`` once while ``exp`` (plus skew) is ahead of ``now``, or raise."""
        what = self._what
        if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI:
            raise ReplayRefused(f"the {what} needs a jti of 1 to {MAX_JTI} characters")
        if isinstance(exp, bool) or not isinstance(exp, int):
            raise ReplayRefused(f"the {what} needs an integer exp")
        until = exp + self._skew
        if until <= now:
            raise ReplayRefused(f"the {what} has expired")
        if exp > now + self._max_lifetime + self._skew:
            raise ReplayRefused(f"the {what}'s exp is more than {self._max_lifetime} s ahead")
        # RFC 7519 4.1.7: a jti is unique per issuer, here the client.
        key = (client_id, jti)
        with self._lock:
            self._forget_expired(now)
            if key in self._until:
                raise ReplayRefused(f"the {what}'s jti was used before")
            if len(self._until) >= self._capacity:
                raise ReplayRefused(f"too many {what}s to remember; try again later")
            self._until[key] = until
            heapq.heappush(self._expiries, (until, key))

    def _forget_expired(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            _, key = heapq.heappop(self._expiries)
            del self._until[key]
