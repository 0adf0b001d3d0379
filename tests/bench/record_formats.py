"""Session record formats side by side (docs/storage-formats.md): size, and the CPU of decoding, which is on every
proxied request whose record is not memoised (docs/performance.md).

``python -m tests.bench.record_formats [--number N] [--runs R]`` prints, for a session with tokens of realistic
size (``tests.support.realistic_tokens``), each format's plaintext and encrypted size, and the best of 25 short
``timeit`` runs of ``decode_session`` alone, of what a lookup that misses the memo costs
(``SessionManager._decrypt``: AES-GCM, inflate, JSON, token re-encoding), and of ``encode_session``. The two
formats' runs alternate, so a load spike on a shared machine hits both and the minimum skips it; run it twice and
trust agreeing figures only.
"""

from __future__ import annotations

import argparse
import sys
import time
import timeit
from collections.abc import Callable

from bff.config import Secret, SessionSettings
from bff.config.values import WRITE_FORMATS
from bff.models import Session
from bff.session.manager import SessionManager
from bff.session.memory_store import MemoryStore
from bff.session.record import decode_session, encode_session
from tests.support.configs import SESSION_KEY
from tests.support.realistic_tokens import realistic_tokens


def realistic_session() -> Session:
    now = int(time.time())
    sub, sid = "f3b1c9e2-4a5d-4e6f-8a7b-1c2d3e4f5a6b", "0c9d8e7f-6a5b-4c3d-2e1f-0a9b8c7d6e5f"
    return Session(
        sub=sub,
        sid=sid,
        tokens=realistic_tokens(sub, sid, now),
        created_at=now + 0.123456,
        expires_at=now + 43200.123456,
        last_seen=now + 0.123456,
        claims={"sub": sub, "name": "Alice Example", "email": "alice@example.com"},
    )


def paired(one: Callable[[], object], two: Callable[[], object], number: int, runs: int) -> tuple[float, float]:
    """Microseconds per call of each, the best of ``runs`` short runs taken alternately (a load spike on the
    machine then hits both, and the minimum skips it)."""
    first, second = [], []
    for _ in range(runs):
        first.append(timeit.timeit(one, number=number))
        second.append(timeit.timeit(two, number=number))
    return min(first) / number * 1e6, min(second) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--number", type=int, default=2000, help="calls per run")
    parser.add_argument("--runs", type=int, default=25, help="alternating runs per measurement")
    args = parser.parse_args()
    session = realistic_session()
    managers = {
        f: SessionManager(MemoryStore(), SessionSettings(keys=(Secret(SESSION_KEY),), write_format=f))
        for f in WRITE_FORMATS
    }
    key = managers[1].key_for("benchmark-session")
    plain = {f: encode_session(session, f) for f in WRITE_FORMATS}
    blobs = {f: m._encrypt(key, session) for f, m in managers.items()}
    out = sys.stdout.write
    for f in WRITE_FORMATS:
        assert decode_session(plain[f]) == session
        assert managers[f]._decrypt(key, blobs[f])[0] == session
        out(f"format {f}: plaintext {len(plain[f])} B, encrypted {len(blobs[f])} B\n")
    one, two = managers[1], managers[2]
    measured = {
        "decode_session": paired(
            lambda: decode_session(plain[1]), lambda: decode_session(plain[2]), args.number, args.runs
        ),
        "decrypt+decode (a lookup that misses the memo)": paired(
            lambda: one._decrypt(key, blobs[1]), lambda: two._decrypt(key, blobs[2]), args.number, args.runs
        ),
        "encode_session": paired(
            lambda: encode_session(session, 1), lambda: encode_session(session, 2), args.number // 4, args.runs
        ),
    }
    for name, (v1, v2) in measured.items():
        out(f"{name}: format 1 {v1:.2f} us, format 2 {v2:.2f} us ({v2 / v1:.2f}x)\n")


if __name__ == "__main__":
    main()
