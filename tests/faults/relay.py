"""A loopback TCP relay in front of a server (Redis, the IdP), run on an event loop of its own in a thread, that
injects the network faults a client cannot tell from a sick server:

* ``slow(seconds)``: every chunk the server sends back arrives that much later (a slow IdP, a slow Redis);
* ``stall()`` / ``resume()``: nothing moves either way and new connections hang, but nothing is lost: the bytes
  held meanwhile are delivered on ``resume()``, as when a server is SIGSTOPped and SIGCONTed;
* ``kill()`` / ``revive()``: live connections are reset and new ones refused (a partition), while the server
  behind keeps its data; an exchange may be cut after its request reached the server;
* ``crash()`` / ``revive()``: a crashed server behind a load balancer. From the call on, no byte more reaches the
  server (what clients send is dropped) and new connections are accepted and reset at once, counted in ``resets``:
  a test can tell how often the client tried. A live connection is reset once the server answered every request
  it already got on it (nothing owed back, nothing held, and the server quiet for :data:`ANSWER_QUIET`), at most
  :data:`CRASH_GRACE` after the call: a crashed server would not have processed a request it never answered, and
  an exchange cut after the server processed it is another fault (an answer lost). ``cut`` counts the exchanges
  that still had to be cut at the bound.

Every control call returns once the relay's loop applied it, within ``CONTROL_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

CONTROL_TIMEOUT = 5.0
CHUNK = 65536
#: ``crash()`` resets a connection with a request in flight at most this long after it was called.
CRASH_GRACE = 2.0
#: An answer is taken as complete once the server sent nothing more on its connection for this long (an answer may
#: come in several chunks, e.g. its head and its body; the relay does not parse the protocol).
ANSWER_QUIET = 0.2
#: How often ``crash()`` looks for connections that have settled.
CRASH_POLL = 0.01


@dataclass(eq=False)
class _Link:
    """One relayed connection, and whether an exchange on it is still in flight."""

    task: asyncio.Task[None]
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None
    #: Bytes went to the server and none came back since: the server holds a request it has not answered.
    owed: bool = False
    #: Chunks read from the server and not yet handed to the client (delayed by ``slow()``, held by ``stall()``).
    held: int = 0
    #: When the server last sent something on this connection (the relay loop's clock).
    last_answer: float = 0.0

    def settled(self, now: float) -> bool:
        """Nothing is in flight: every request the server got is answered and the answer handed on in full."""
        return (
            not self.owed
            and not self.held
            and now - self.last_answer >= ANSWER_QUIET
            and not self.client.transport.get_write_buffer_size()
        )

    def abort(self) -> None:
        for writer in (self.client, self.server):
            if writer is not None:
                writer.transport.abort()  # as from a dead peer

    def reset(self) -> None:
        self.abort()
        self.task.cancel()


class Relay:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._delay = 0.0
        self._crashed = False
        #: Connections accepted and reset at once while crashed, and when the last one was (``time.monotonic()``).
        self.resets = 0
        self.last_reset = 0.0
        #: Exchanges ``crash()`` had to cut after their request reached the server (unanswered within the grace).
        self.cut = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"relay-{target_port}", daemon=True)
        self._server: asyncio.Server | None = None
        self._running: asyncio.Event | None = None
        self._links: set[_Link] = set()

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
        self._call(self._crash())

    def revive(self) -> None:
        self._call(self._revive())

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
        for link in list(self._links):
            link.reset()
        self._links.clear()

    async def _crash(self) -> None:
        self._crashed = True  # from here on nothing more is forwarded to the server, and new connections are reset
        await self._listen()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CRASH_GRACE
        while self._links:
            now = loop.time()
            for link in list(self._links):
                settled = link.settled(now)
                if settled or now >= deadline:
                    self.cut += not settled
                    self._links.discard(link)
                    link.reset()
            if self._links:
                await asyncio.sleep(CRASH_POLL)

    async def _revive(self) -> None:
        self._crashed = False
        await self._listen()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        assert self._running is not None
        if self._crashed:
            self.resets += 1
            self.last_reset = time.monotonic()
            client_writer.transport.abort()
            return
        link = _Link(task, client_writer)
        self._links.add(link)
        try:
            await self._running.wait()  # a stalled server accepts (the kernel does) but does not answer
            server_reader, link.server = await asyncio.open_connection("127.0.0.1", self.target_port)
            await asyncio.gather(
                self._to_server(link, client_reader, link.server),
                self._to_client(link, server_reader, client_writer),
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # reset by kill() or crash(): ends quietly (3.11's start_server asks a cancelled task its exception)
        finally:
            self._links.discard(link)
            link.abort()

    async def _to_server(self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._running is not None
        try:
            while chunk := await reader.read(CHUNK):
                await self._running.wait()
                if self._crashed:
                    continue  # a crashed server gets nothing
                link.owed = True
                writer.write(chunk)
                await writer.drain()
        finally:
            if not self._crashed and writer.can_write_eof():
                with contextlib.suppress(OSError):
                    writer.write_eof()

    async def _to_client(self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._running is not None
        loop = asyncio.get_running_loop()
        try:
            while chunk := await reader.read(CHUNK):
                link.owed = False
                link.held += 1
                link.last_answer = loop.time()
                try:
                    if self._delay:
                        await asyncio.sleep(self._delay)
                    await self._running.wait()
                    writer.write(chunk)
                    await writer.drain()
                finally:
                    link.held -= 1
                    link.last_answer = loop.time()
        finally:
            if writer.can_write_eof():
                with contextlib.suppress(OSError):
                    writer.write_eof()
