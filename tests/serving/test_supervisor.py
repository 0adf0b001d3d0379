"""bff's ``--workers`` supervisor with workers that misbehave (``tests/serving/supervised.py``), as real processes:
a worker stuck in its shutdown is killed and the supervisor says so with exit status 1; a worker that crashes while
serving is replaced; workers that cannot start stop the supervisor with status 3. (Workers that behave are
``test_shutdown.py``'s ``two-workers`` cases.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PATIENCE = 20.0


def supervise(mode: str, state: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.serving.supervised", mode, str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def workers_started(state: Path, count: int, process: subprocess.Popen[bytes]) -> list[int]:
    """The pids of the first ``count`` workers that started serving (each writes its pid)."""
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        pids = sorted(int(p.name) for p in state.iterdir() if p.name.isdigit())
        if len(pids) >= count:
            return pids
        if process.poll() is not None:
            break
        time.sleep(0.02)
    process.kill()
    pytest.fail(f"{count} worker(s) never started:\n{process.communicate()[0].decode()[-3000:]}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_worker_stuck_in_its_shutdown_is_killed(tmp_path: Path) -> None:
    process = supervise("stubborn", tmp_path)
    pids = workers_started(tmp_path, 2, process)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=PATIENCE)
    assert process.returncode == 1, output.decode()
    assert output.decode().count("after the signal: killed") == 2
    assert not any(alive(pid) for pid in pids)


def test_a_worker_that_dies_while_serving_is_replaced(tmp_path: Path) -> None:
    process = supervise("dies-once", tmp_path)
    pids = workers_started(tmp_path, 2, process)  # the one that died never wrote its pid: two serve
    assert (tmp_path / "died").exists()
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=PATIENCE)
    assert process.returncode == 0, output.decode()
    assert "died (exit status 1); starting another" in output.decode()
    assert not any(alive(pid) for pid in pids)


def test_workers_that_cannot_start_stop_the_supervisor_with_status_3(tmp_path: Path) -> None:
    process = supervise("cannot-start", tmp_path)
    output, _ = process.communicate(timeout=PATIENCE)
    assert process.returncode == 3, output.decode()
    assert "failed to start; stopping" in output.decode()
