"""The ``jti`` values a signed message has used, so that one captured message cannot be replayed: the request
objects of RFC 9101 and the ``private_key_jwt`` assertions of RFC 7523 / OpenID Connect Core 9 at the reference
IdP, and DPoP proofs (RFC 9449 11.1) at the IdP and the demo API (``dpop_proofs``).

A :class:`ReplayCache` keeps ``(issuer, jti)`` for as long as the message could still be accepted, and no longer:
a signed client message until its ``exp`` plus the allowed clock skew (RFC 7523 3 item 7), a DPoP proof until a
window after its ``iat``. Memory stays bounded under a flood: at most ``capacity`` live entries; when that many
are live a new message is refused (:class:`ReplayRefused`, the server is busy) rather than forgetting a live
``jti`` (which would reopen its replay). Expired entries leave in expiry order through a heap, so each use costs
O(log n). Only messages whose signature verified reach the cache. The cache lives in the process.

:meth:`ReplayCache.use` holds every check on a client message's ``jti`` and ``exp``, the same for both kinds:
``jti`` a string of 1 to :data:`MAX_JTI` characters, ``exp`` an integer (OpenID Connect Core 9: both REQUIRED),
not past, and at most ``max_lifetime`` (plus skew) ahead, so an entry never outlives that.
:meth:`ReplayCache.remember` is the memory itself, for a caller that checked its message's lifetime (DPoP).
"""

from __future__ import annotations

import heapq
import threading

#: Longest ``jti`` remembered: the memory of one entry is bounded too.
MAX_JTI = 256


class ReplayRefused(Exception):
    """The message must be refused: no usable ``jti`` or ``exp``, a replay, or a full cache (the server is busy);
    the message says which and never quotes the token."""


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
        #: ``(issuer, jti)`` -> the moment from which the message can no longer be accepted.
        self._until: dict[tuple[str, str], float] = {}
        #: ``(until, key)`` of every entry of ``_until``, earliest first.
        self._expiries: list[tuple[float, tuple[str, str]]] = []

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
        self.remember(client_id, jti, until, now=now)

    def remember(self, issuer: str, jti: str, until: float, *, now: float) -> None:
        """Accept ``jti`` of ``issuer`` once and refuse it again while ``now`` is before ``until``, or raise (a
        replay, or the cache is full of live entries).

        The caller has checked that ``jti`` is at most :data:`MAX_JTI` characters and that the message can be
        accepted from ``now`` until ``until`` and not from then on: nothing is forgotten before it expires."""
        key = (issuer, jti)
        with self._lock:
            self._forget_expired(now)
            if key in self._until:
                raise ReplayRefused(f"the {self._what}'s jti was used before")
            if len(self._until) >= self._capacity:
                raise ReplayRefused(f"the server is busy: too many {self._what}s to remember; try again later")
            self._until[key] = until
            heapq.heappush(self._expiries, (until, key))

    def release(self, issuer: str, jti: str) -> None:
        """``jti`` of ``issuer`` did not serve after all (the request it came with was refused before it was used:
        its client failed to authenticate): it no longer takes room, and may be accepted again."""
        with self._lock:
            self._until.pop((issuer, jti), None)

    def _forget_expired(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            until, key = heapq.heappop(self._expiries)
            if self._until.get(key) == until:  # not released, or released and remembered again since
                del self._until[key]
