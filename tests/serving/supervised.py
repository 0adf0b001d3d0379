"""``python -m tests.serving.supervised MODE STATE_DIR``: bff's :class:`~bff.serving.Supervisor` running two workers
that misbehave as ``MODE`` says, for ``test_supervisor.py``. Each worker writes its pid into ``STATE_DIR``.

- ``stubborn``: the workers ignore SIGTERM (a worker stuck in its shutdown);
- ``dies-once``: one worker exits 1 as soon as it starts (a crash while serving), the others run until SIGTERM;
- ``cannot-start``: the workers exit 3, uvicorn's status for a failed startup.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

import uvicorn

from bff.config import ServerSettings
from bff.serving import supervisor

MODES = ("stubborn", "dies-once", "cannot-start")


def worker(mode: str, state: str, sockets: list[socket.socket], ready: Connection) -> None:
    directory = Path(state)
    if mode == "cannot-start":
        sys.exit(3)
    if mode == "dies-once":
        try:
            os.close(os.open(directory / "died", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            pass
        else:
            sys.exit(1)
    stopped = False

    def stop(sig: int, frame: object) -> None:
        nonlocal stopped
        stopped = True

    signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "stubborn" else stop)
    ready.send_bytes(b"ready")  # a worker's duty (see bff.serving.supervisor.Worker)
    (directory / str(os.getpid())).touch()
    deadline = time.monotonic() + 60
    while not stopped and time.monotonic() < deadline:
        time.sleep(0.02)


def main(mode: str, state: str) -> int:
    if mode == "stubborn":  # killed soon; the others get the margin bff serve gives
        supervisor.KILL_MARGIN = 0.3
    config = uvicorn.Config("bff.app:app_from_env", host="127.0.0.1", port=0, log_config=None)
    settings = ServerSettings(drain_delay=0.0, shutdown_timeout=0.2)
    target = functools.partial(worker, mode, state)
    return supervisor.Supervisor(config, 2, target, settings).run()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in MODES:
        sys.stderr.write(f"usage: python -m tests.serving.supervised {{{','.join(MODES)}}} STATE_DIR\n")
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
