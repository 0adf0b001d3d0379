"""The idle keep-alive connections of the data-plane client, per origin (and TLS context).

Connections are reused most-recently-used first (the warmest, least likely to have been closed by the upstream's own
keep-alive timeout); an idle one is closed after ``keepalive_timeout`` by one sweeper timer that runs only while any
connection is idle; at most ``MAX_IDLE_PER_ORIGIN`` wait per origin. :class:`~bff.upstream.client.UpstreamClient`
is this pool (a subclass, so taking and returning a connection costs no call through another object).
"""

from __future__ import annotations

import asyncio

from bff.upstream.connection import Connection

#: Idle connections kept per origin, more are closed when released: enough for a burst of concurrent requests to
#: find its connections again in the next burst, few enough that a spike cannot hold file descriptors for long.
MAX_IDLE_PER_ORIGIN = 1024


class ConnectionPool:
    """Idle connections by origin key. ``await aclose()`` closes them all and every connection released later."""

    def __init__(self, keepalive_timeout: float) -> None:
        self._keepalive_timeout = keepalive_timeout
        self._idle: dict[tuple[object, ...], list[Connection]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    def _idle_connection(self, key: tuple[object, ...]) -> Connection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if not connection.closed:
                connection.reused = True
                return connection
        return None

    def release(self, key: tuple[object, ...], connection: Connection) -> None:
        if self._closed or not connection.reusable:
            connection.close()
            return
        connection.reset()
        idle = self._idle.setdefault(key, [])
        if len(idle) >= MAX_IDLE_PER_ORIGIN:
            connection.close()
            return
        loop = connection.loop
        connection.idle_since = loop.time()
        idle.append(connection)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._keepalive_timeout / 2, self._sweep)

    def _sweep(self) -> None:
        """Close the connections idle for longer than ``keepalive_timeout``; runs while any connection is idle."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        horizon = loop.time() - self._keepalive_timeout
        for key, idle in list(self._idle.items()):
            keep = [c for c in idle if not c.closed and c.idle_since > horizon]
            for connection in idle:
                if connection not in keep:
                    connection.close()
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        if self._idle:
            self._sweeper = loop.call_later(self._keepalive_timeout / 2, self._sweep)

    def idle_connections(self) -> int:
        """How many kept-alive connections wait for a request (for tests and diagnostics)."""
        return sum(len(idle) for idle in self._idle.values())

    async def aclose(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
        # Let the transports (TLS ones included) finish closing before the loop goes away.
        await asyncio.sleep(0)
