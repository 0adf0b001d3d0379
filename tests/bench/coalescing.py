"""A ``redis.asyncio`` client whose commands, issued by many coroutines at once, go out together in pipelines.

The Redis memory benchmark creates, reads and expires 100,000 sessions through bff's own ``RedisStore`` and
``SessionManager``; sent one at a time, redis-py's per-command round trip is most of its minutes. ``RedisStore``
issues every command through its client's methods (``set``, ``pexpire``, ``evalsha`` of its scripts, ...), which all
end in ``execute_command``: this client queues them instead, and sends what queued within one turn of the event loop
(at most ``batch`` commands) as one pipeline (not a transaction) on a connection of the pool. Each caller gets its own
reply, or its own error (NOSCRIPT included, so ``Script`` loads its script as usual): the same commands with the same
arguments reach Redis, only fewer round trips carry them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

_Queued = tuple[tuple[Any, ...], dict[str, Any], "asyncio.Future[Any]"]


class CoalescingRedis(Redis):
    """Wraps ``client`` (and closes it in ``aclose``): its connection pool carries the pipelines."""

    def __init__(self, client: Redis, *, batch: int = 1000) -> None:
        super().__init__(connection_pool=client.connection_pool)
        self._inner = client
        self._batch = batch
        self._queue: list[_Queued] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((args, options, future))
        if len(self._queue) >= self._batch:
            self._flush()
        elif len(self._queue) == 1:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        if not self._queue:
            return
        queued, self._queue = self._queue, []
        task = asyncio.get_running_loop().create_task(self._send(queued))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, queued: list[_Queued]) -> None:
        pipe = self._inner.pipeline(transaction=False)
        for args, options, _ in queued:
            pipe.execute_command(*args, **options)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch, as redis-py would raise it
            for _, _, future in queued:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, _, future), reply in zip(queued, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await asyncio.gather(*self._sending)
        await self._inner.aclose(close_connection_pool)
