"""A loopback TCP relay in front of a server (Redis, the IdP), run on an event loop of its own in a thread, that
injects the network faults a client cannot tell from a sick server:

* ``slow(seconds)``: every chunk the server sends back arrives that much later (a slow IdP, a slow Redis);
* ``stall()`` / ``resume()``: nothing moves either way and new connections hang, but nothing is lost: the bytes
  held meanwhile are delivered on ``resume()``, as when a server is SIGSTOPped and SIGCONTed;
* ``kill()`` / ``revive()``: live connections are reset and new ones refused (a crashed server, a partition),
  while the server behind keeps its data;
* ``crash()`` / ``revive()``: the same, but new connections are accepted and reset at once (a crashed server
  behind a load balancer), and counted in ``resets``: a test can tell how often the client tried.

Every control call returns once the relay's loop applied it, within ``CONTROL_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Coroutine
from typing import Any

CONTROL_TIMEOUT = 5.0
CHUNK = 65536


class Relay:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._delay = 0.0
        self._crashed = False
        #: Connections accepted and reset at once while crashed, and when the last one was (``time.monotonic()``).
        self.resets = 0
        self.last_reset = 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"relay-{target_port}", daemon=True)
        self._server: asyncio.Server | None = None
        self._running: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url_host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Relay:
        self._thread.start()
        self._call(self._start())
        return self

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._kill())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=CONTROL_TIMEOUT)
        if not self._thread.is_alive():
            self._loop.close()

    def slow(self, seconds: float) -> None:
        self._delay = seconds

    def stall(self) -> None:
        self._call(self._set_running(False))

    def resume(self) -> None:
        self._call(self._set_running(True))

    def kill(self) -> None:
        self._call(self._kill())

    def crash(self) -> None:
        self._crashed = True
        self._call(self._kill())
        self._call(self._listen())

    def revive(self) -> None:
        self._crashed = False
        self._call(self._listen())

    # --- on the relay's loop ---------------------------------------------------------------------------------------

    def _call(self, coroutine: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=CONTROL_TIMEOUT)

    async def _start(self) -> None:
        self._running = asyncio.Event()
        self._running.set()
        await self._listen()

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)
            self.port = self._server.sockets[0].getsockname()[1]

    async def _set_running(self, running: bool) -> None:
        assert self._running is not None
        if running:
            self._running.set()
        else:
            self._running.clear()

    async def _kill(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()  # RST, as from a dead peer
        self._writers.clear()
        for task in list(self._tasks):
            task.cancel()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        assert self._running is not None
        if self._crashed:
            self.resets += 1
            self.last_reset = time.monotonic()
            client_writer.transport.abort()
            return
        self._tasks.add(task)
        self._writers.add(client_writer)
        server_writer: asyncio.StreamWriter | None = None
        try:
            await self._running.wait()  # a stalled server accepts (the kernel does) but does not answer
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            self._writers.add(server_writer)
            await asyncio.gather(
                self._pump(client_reader, server_writer, delayed=False),
                self._pump(server_reader, client_writer, delayed=True),
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for writer in (client_writer, server_writer):
                if writer is not None:
                    self._writers.discard(writer)
                    writer.transport.abort()
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, delayed: bool) -> None:
        assert self._running is not None
        try:
            while chunk := await reader.read(CHUNK):
                if delayed and self._delay:
                    await asyncio.sleep(self._delay)
                await self._running.wait()
                writer.write(chunk)
                await writer.drain()
        finally:
            if writer.can_write_eof():
                with contextlib.suppress(OSError):
                    writer.write_eof()
