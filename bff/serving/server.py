"""``bff serve``'s server: uvicorn's ``Server`` with a graceful shutdown in phases, and exit status 0.

On the first SIGTERM or SIGINT:

1. **drain** (``[server] drain_delay``): the app's :class:`~bff.endpoints.health.Drain` begins, so ``/readyz``
   answers 503 at once, while new connections and requests are still served: the load balancer needs a few probe
   periods to take the instance out of rotation, and connections it opens meanwhile must not be refused;
2. **close** (up to ``[server] shutdown_timeout``): the listener closes (new connections are refused), idle
   keep-alive connections close, and every request still being answered gets ``Connection: close`` (RFC 9112 9.6)
   and may finish; WebSockets stay open until the deadline;
3. **deadline**: connections still open are ended (an SSE stream or a download relayed by the proxy stops
   mid-body: the browser sees a truncated answer and reconnects elsewhere, no hang), WebSockets get close code 1012
   "service restart" (RFC 6455 7.4.1), and tasks that still run are cancelled;
4. the lifespan's shutdown: refreshes still in flight (their request gone) get what is left of
   ``shutdown_timeout`` (at least half a second) to save what the IdP answers, then are cancelled, releasing their
   store locks so that another instance can refresh (a write of tokens the IdP already rotated goes on to its
   refresh deadline);
5. the process exits 0: unlike uvicorn's, the captured signal is not raised again, so an orchestrator sees a clean
   stop.

A second SIGINT (Ctrl+C twice) skips the waiting. This overrides uvicorn's ``Server.capture_signals``,
``handle_exit``, ``on_tick`` and ``shutdown`` and reads its ``servers``, ``server_state``, ``lifespan``,
``force_exit`` and ``started``: ``tests/serving/test_uvicorn_internals.py`` checks they are still there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Generator
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from bff.config import ServerSettings
from bff.endpoints.health import Drain

logger = logging.getLogger("bff.serving")

#: The signals that start a graceful shutdown.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: After the deadline, how long ended connections and cancelled tasks get to wind down before the lifespan's
#: shutdown runs regardless.
CUT_GRACE = 1.0
#: How often the close phase looks whether everything finished.
POLL = 0.05


class ClosingServerState(ServerState):
    """uvicorn's state shared by the server and its connections, and whether the close phase has begun: a request
    whose head arrives after that is answered with ``Connection: close``
    (:class:`~bff.serving.httptools_protocol.CoalescingHttpToolsProtocol` reads it)."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = False


class DrainingServer(uvicorn.Server):
    """uvicorn's server with bff's graceful shutdown (see the module docstring), telling the app through ``drain``
    (its ``/readyz`` and its lifespan's shutdown read it)."""

    def __init__(self, config: uvicorn.Config, *, settings: ServerSettings, drain: Drain) -> None:
        super().__init__(config)
        self._drain_delay = settings.drain_delay
        self._shutdown_timeout = settings.shutdown_timeout
        self._drain = drain
        #: ``time.monotonic()`` at which the drain ends; None until a stop signal arrived.
        self._drain_ends: float | None = None
        self._drain_logged = False
        self._interrupts = 0
        self.server_state: ClosingServerState = ClosingServerState()

    # --- signals -------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)
        # uvicorn raises the captured signal again here; a process that drained and stopped exits 0 instead.

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: set flags only (logging here could interleave with a log line being written).
        if sig == signal.SIGINT:
            self._interrupts += 1
        if self._drain_ends is None:
            self._drain_ends = time.monotonic() + self._drain_delay
            self._drain.begin()
        elif self._interrupts >= 2:  # Ctrl+C twice: stop waiting
            self.force_exit = True
            self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self._drain_ends is not None:
            if not self._drain_logged:
                self._drain_logged = True
                logger.info(
                    "Stop signal received: /readyz answers 503; still serving for %gs (drain_delay)", self._drain_delay
                )
            if time.monotonic() >= self._drain_ends or self.force_exit:
                return True
        return await super().on_tick(counter)

    # --- shutdown ------------------------------------------------------------------------------------------------

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        state = self.server_state
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._shutdown_timeout
        self._drain.deadline = deadline
        state.closing = True
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        http = [c for c in state.connections if isinstance(c, HttpToolsProtocol)]
        logger.info(
            "Listener closed; %d connection(s) open, requests in flight get up to %gs (shutdown_timeout)",
            len(state.connections),
            self._shutdown_timeout,
        )
        for connection in http:
            connection.shutdown()  # idle: closed now; answering: Connection: close, closed after the answer
        await self._until(lambda: not state.connections and not state.tasks, deadline)
        if state.connections:
            logger.warning(
                "shutdown_timeout passed: ending %d connection(s) still open (streams are cut)", len(state.connections)
            )
            for open_connection in list(state.connections):
                if isinstance(open_connection, HttpToolsProtocol):
                    open_connection.transport.close()
                else:  # a WebSocket: close 1012, service restart
                    open_connection.shutdown()
            await self._until(lambda: not state.connections, loop.time() + CUT_GRACE)
            for stuck in list(state.connections):
                transport: Any = getattr(stuck, "transport", None)
                if transport is not None:
                    transport.abort()
        if state.tasks:
            for task in list(state.tasks):
                task.cancel("bff is shutting down: shutdown_timeout passed")
            await asyncio.wait(list(state.tasks), timeout=CUT_GRACE)
        for server in self.servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), CUT_GRACE)
        if not self.force_exit:
            await self.lifespan.shutdown()
        logger.info("Shutdown complete")

    async def _until(self, done: Callable[[], bool], deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while not done() and not self.force_exit and loop.time() < deadline:  # noqa: ASYNC110 - uvicorn has no event
            await asyncio.sleep(POLL)
