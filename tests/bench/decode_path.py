"""``python -m tests.bench.decode_path``: CPU of one session lookup, memo hit and memo miss (docs/performance.md).

A lookup is what a proxied request does with its session cookie once the store has answered: verify the cookie,
hash the session id into its store key, decrypt and decode the record (or find it in the per-worker memo), check
its expiry and take the access token it sends upstream. The store round trip is left out (it is the same either
way). Sessions have tokens of realistic size (``tests.support.realistic_tokens``), stored in store format 2.

* ``miss``: every lookup is of a session this worker has not seen: a cookie it never verified, a record it never
  decoded (the memo of a worker serving more users than it holds, or the first request of each).
* ``hit``: the same session over and over: cookie and record remembered.

Prints the best of ``--runs`` short timed runs (µs per lookup), then, with ``valgrind`` on PATH, the instructions
per lookup under ``valgrind --tool=callgrind``: a loop run at LOW and at HIGH lookups, the difference over
HIGH - LOW (start-up and set-up cancel out). Instruction counts are deterministic on a loaded machine; timings are
not, so compare them only within one run.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time

from bff.config import Secret, SessionSettings
from bff.session.manager import SessionManager
from bff.session.memory_store import MemoryStore
from tests.bench.callgrind import instructions
from tests.bench.record_formats import realistic_session
from tests.support.configs import SESSION_KEY

LOW, HIGH = 200, 600


class Lookups:
    """``count`` distinct sessions (cookie value, record bytes) of one manager, and the lookup itself."""

    def __init__(self, count: int, write_format: int = 2) -> None:
        settings = SessionSettings(keys=(Secret(SESSION_KEY),), write_format=write_format)
        self.manager = SessionManager(MemoryStore(), settings)
        session = realistic_session()
        self.now = session.created_at
        self.sessions: list[tuple[str, bytes]] = []
        for n in range(count):
            session_id = f"decode-path-session-{n:08d}-{'x' * 16}"
            raw = self.manager._encrypt(self.manager.key_for(session_id), session)
            self.sessions.append((self.manager.cookie_value(session_id), raw))
        self.expected = session.tokens.access_token

    def lookup(self, cookie: str, raw: bytes) -> str:
        manager = self.manager
        session_id = manager.session_id_from_cookie(cookie)
        assert session_id is not None
        session = manager._decoded(manager.key_for(session_id), raw)
        assert not isinstance(session, int)
        assert session is not None
        assert manager.ttl_for(session, self.now) > 0
        token = session.tokens.access_token
        assert token is self.expected or token == self.expected
        return token

    def run_miss(self, count: int) -> None:
        for cookie, raw in self.sessions[:count]:
            self.lookup(cookie, raw)

    def run_hit(self, count: int) -> None:
        cookie, raw = self.sessions[0]
        for _ in range(count):
            self.lookup(cookie, raw)


def _timed(count: int, runs: int) -> dict[str, float]:
    best = {"hit": float("inf"), "miss": float("inf")}
    for _ in range(runs):
        lookups = Lookups(count)  # fresh: nothing verified or decoded yet
        start = time.perf_counter()
        lookups.run_miss(count)
        best["miss"] = min(best["miss"], (time.perf_counter() - start) / count * 1e6)
        start = time.perf_counter()
        lookups.run_hit(count)
        best["hit"] = min(best["hit"], (time.perf_counter() - start) / count * 1e6)
    return best


def main(argv: list[str]) -> int:
    if argv[:1] == ["--loop"]:
        lookups = Lookups(HIGH)  # the same set-up at LOW and HIGH: it cancels out
        getattr(lookups, f"run_{argv[1]}")(int(argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--number", type=int, default=2000, help="lookups per timed run")
    parser.add_argument("--runs", type=int, default=7, help="timed runs (the best counts)")
    parser.add_argument("--no-callgrind", action="store_true", help="timings only")
    args = parser.parse_args(argv)
    out = sys.stdout.write
    for mode, micros in _timed(args.number, args.runs).items():
        out(f"memo {mode:<4} {micros:8.2f} us per lookup (best of {args.runs} x {args.number})\n")
    valgrind = shutil.which("valgrind")
    if args.no_callgrind or valgrind is None:
        return 0
    for mode in ("hit", "miss"):
        high, low = (instructions(valgrind, "tests.bench.decode_path", "--loop", mode, str(n)) for n in (HIGH, LOW))
        per = (high - low) / (HIGH - LOW)
        out(f"memo {mode:<4} {per:>10,.0f} instructions per lookup (callgrind)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
