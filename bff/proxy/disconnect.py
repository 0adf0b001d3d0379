"""Noticing that the browser left: ``send()`` after a disconnect may be a silent no-op (uvicorn), so without a
watcher an endless SSE stream would run on for nobody.

Once the request body has been read, ``receive()`` yields nothing but the disconnect; a watcher task waits on it and
cancels the request's task, which abandons the upstream request. The task starts only ``WATCH_DELAY`` into the
request: most answers are complete sooner and never pay for a task, and a timer costs next to nothing.
"""

from __future__ import annotations

import asyncio

from bff.types import Receive

#: How long a request runs before a task starts watching for the browser leaving (a task per request would cost more
#: CPU than the rest of the proxy's own work). A browser that leaves is noticed at most this much later.
WATCH_DELAY = 0.05


class DisconnectWatch:
    """Cancels the request's task when the browser disconnects, abandoning the upstream request with it."""

    __slots__ = ("_receive", "_task", "_timer", "_watcher", "finished", "fired")

    def __init__(self) -> None:
        self._task = asyncio.current_task()
        self._receive: Receive | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.finished = False
        self.fired = False

    def start(self, receive: Receive) -> None:
        """Call only once the request body has been read: ``receive()`` then yields nothing but the disconnect.
        The watcher task itself starts ``WATCH_DELAY`` later, if the request is still running then."""
        if self._receive is None and self._task is not None:
            self._receive = receive
            self._timer = asyncio.get_running_loop().call_later(WATCH_DELAY, self._spawn, receive)

    def _spawn(self, receive: Receive) -> None:
        self._timer = None
        if not self.finished:
            self._watcher = asyncio.get_running_loop().create_task(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        # At most the (empty) body message nobody read, then the disconnect. Never loop on receive(): a server that
        # kept answering at once would starve the event loop.
        for _ in range(2):
            if (await receive())["type"] == "http.disconnect":
                # A server may also report "disconnect" once the response is complete: that is not the browser leaving.
                if not self.finished and self._task is not None:
                    self.fired = True
                    self._task.cancel()
                return

    def stop(self) -> None:
        self.finished = True
        if self._timer is not None:
            self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
