"""A clock the test moves by hand, injected wherever bff takes a ``Clock``, so expiry is tested without sleeping."""

from __future__ import annotations


class FakeClock:
    """Seconds since the epoch, frozen until ``advance`` moves them on."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go backwards in these tests")
        self.now += seconds
