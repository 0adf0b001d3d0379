"""``bff serve --workers N``: a small supervisor in place of uvicorn's, so that the graceful shutdown holds with
several processes.

The supervisor binds the listening socket and hands it to N worker processes (spawned; each one runs a
:class:`~bff.serving.server.DrainingServer` on it). All of them hold the same listening socket, and the kernel keeps
completing handshakes into its backlog as long as *any* process holds it open. uvicorn's supervisor keeps its copy
until it exits, so once the workers had stopped accepting, connections opened during their shutdown were accepted by
the kernel and never served (they hung until the supervisor exited, then failed). Here, on SIGTERM or SIGINT, the
supervisor closes its copy at once and forwards SIGTERM to every worker (to one still starting, as soon as it can
handle it: see :data:`Worker`): the workers keep accepting through ``drain_delay``, and once the last one has
closed the socket a new connection is refused.

A worker that dies while serving is replaced; one that fails to start (exit status 3) stops the supervisor, as in
uvicorn. A worker still running ``drain_delay + shutdown_timeout + KILL_MARGIN`` after the signal is killed.
The supervisor exits 0 when every worker stopped cleanly, else 1 (or 3 when a worker could not start).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from bff.config import ServerSettings
from bff.errors import EXIT_CONFIG
from bff.serving.server import STOP_SIGNALS

logger = logging.getLogger("bff.serving")

#: Beyond drain_delay + shutdown_timeout, what a worker gets for its lifespan's shutdown before it is killed.
KILL_MARGIN = 10.0
#: How often the supervisor looks for dead workers while all is well.
WATCH_INTERVAL = 0.5
#: While stopping, how often it looks for workers that became able to drain.
FORWARD_INTERVAL = 0.05

#: A worker: called with the listening socket and the write end of a pipe, on which it sends one message once it
#: handles SIGTERM (it is told to stop only then: before, SIGTERM's default action would kill it mid-start).
Worker = Callable[[list[socket.socket], Connection], None]


class Supervisor:
    """Runs ``workers`` processes of ``target`` on one listening socket bound per ``config`` (see the module
    docstring). ``target`` must pickle (a module-level function or a ``functools.partial`` of one); see
    :data:`Worker`."""

    def __init__(self, config: uvicorn.Config, workers: int, target: Worker, settings: ServerSettings) -> None:
        self.config = config
        self.count = workers
        self.target = target
        self.stop_within = settings.drain_delay + settings.shutdown_timeout + KILL_MARGIN
        self.processes: list[BaseProcess] = []
        #: Per worker, the read end of its pipe: readable once the worker handles SIGTERM.
        self._ready: dict[BaseProcess, Connection] = {}
        #: Workers told to stop.
        self._signalled: set[BaseProcess] = set()
        self._sock: socket.socket | None = None
        #: The stop signal's handler writes here to wake the main loop at once.
        self._wake_read, self._wake_write = os.pipe()
        self._stopping_since: float | None = None
        self._context = multiprocessing.get_context("spawn")

    def run(self) -> int:
        self._sock = self.config.bind_socket()
        original = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        try:
            logger.info("Started supervisor process [%d] with %d workers", os.getpid(), self.count)
            for _ in range(self.count):
                process = self._spawn()
                if process is not None:
                    self.processes.append(process)
            status = self._watch()
            stopped = self._stop_all()
            return status or stopped
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)
            self._close_socket()
            os.close(self._wake_read)
            os.close(self._wake_write)

    def _spawn(self) -> BaseProcess | None:
        """A new worker on the socket; None once stopping (no new worker then)."""
        if self._sock is None or self._stopping_since is not None:
            return None
        ready, tell = self._context.Pipe(duplex=False)
        process = self._context.Process(target=self.target, args=([self._sock], tell), daemon=False)
        process.start()
        tell.close()
        self._ready[process] = ready
        return process

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: note the stop and wake the main loop, which closes the socket and forwards the signal
        # (not here: the handler may run in the middle of handing the socket to a new worker).
        if self._stopping_since is None:
            self._stopping_since = time.monotonic()
            os.write(self._wake_write, b"x")

    def _forward(self) -> None:
        """SIGTERM to every running worker that handles it and has not had it yet."""
        for process in self.processes:
            if process in self._signalled or process.pid is None or process.exitcode is not None:
                continue
            ready = self._ready.get(process)
            if ready is not None and ready.poll():
                os.kill(process.pid, signal.SIGTERM)
                self._signalled.add(process)

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _watch(self) -> int:
        """Until a stop signal: replace workers that die. Returns the exit status owed so far."""
        while self._stopping_since is None:
            wait([self._wake_read, *(p.sentinel for p in self.processes)], timeout=WATCH_INTERVAL)
            for index, process in enumerate(self.processes):
                if process.exitcode is None or self._stopping_since is not None:
                    continue
                if process.exitcode in (STARTUP_FAILURE, EXIT_CONFIG):  # a restart would fail the same way
                    logger.error("Worker [%s] failed to start; stopping", process.pid)
                    self._stopping_since = time.monotonic()
                    return process.exitcode
                logger.warning("Worker [%s] died (exit status %s); starting another", process.pid, process.exitcode)
                replacement = self._spawn()
                if replacement is not None:
                    self._ready.pop(process).close()
                    self.processes[index] = replacement
        return 0

    def _stop_all(self) -> int:
        """Wait for the workers to finish their shutdown; kill those that overrun. 0 if all stopped cleanly."""
        assert self._stopping_since is not None
        # Our copy of the socket goes first: once the workers have closed theirs, the kernel refuses new
        # connections instead of queueing them for nobody.
        self._close_socket()
        self._forward()
        logger.info("Stop signal: listening socket closed, SIGTERM sent to %d worker(s)", len(self.processes))
        deadline = self._stopping_since + self.stop_within
        while time.monotonic() < deadline and any(p.exitcode is None for p in self.processes):
            self._forward()  # workers still starting are told once they can drain
            wait([p.sentinel for p in self.processes if p.exitcode is None], timeout=FORWARD_INTERVAL)
        status = 0
        for process in self.processes:
            if process.exitcode is None:
                logger.error("Worker [%s] still running %gs after the signal: killed", process.pid, self.stop_within)
                process.kill()
                process.join()
                status = 1
            elif process.exitcode != 0:
                logger.error("Worker [%s] stopped with exit status %s", process.pid, process.exitcode)
                status = 1
        for ready in self._ready.values():
            ready.close()
        logger.info("Stopped supervisor process [%d]", os.getpid())
        return status
