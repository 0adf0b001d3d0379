"""The session store on Redis: standalone, Sentinel or Cluster, through ``redis.asyncio``.

With ``bff.session.redis_urls`` (which builds the clients from the store URL), the only module that imports
``redis``. Every method is one single-key command or one Lua script (``bff.session.redis_scripts``) that touches
exactly one key, so each is atomic and runs unchanged on Redis Cluster (a script's keys must hash to one slot). No
KEYS or SCAN: nothing here is O(number of keys). The per-request ``get_and_touch`` on a plain standalone Redis goes
over a leaner pipelined connection of bff's own (``bff.session.redis_pipeline``); the rest, and Sentinel, Cluster
and TLS, through redis-py.

Failing fast is the point: sockets time out after ``timeout`` seconds and a timeout is never retried, so a dead
Redis costs a request about one timeout and the app answers 503 (``SessionStoreUnavailable``) instead of hanging.
A *connection* error is retried once, at once: after Redis restarts, every pooled connection is dead, and redis-py
8 no longer notices that before using one (it skips the pool's dirty-connection check while its maintenance
notifications are enabled, which is the default), so without the retry each of them would cost a request a 503.
A refused connection fails in microseconds, so the retry keeps the bound. The client reconnects on the next call,
so a Redis that comes back is used again without restarting bff (``tests/session/test_redis_store.py``).

With ``replicas`` (``[session] store_replicas``), every write but the per-request GETEX and ``touch`` is followed
by ``WAIT`` on its connection and fails with 503 unless that many replicas confirmed it: Redis replicates
asynchronously, and a failover loses the writes only the old primary held (see ``_write`` and docs/redis-ha.md).

Requires Redis >= 6.2 (GETDEL, GETEX).
"""

from __future__ import annotations

import contextlib
import math
import secrets
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisClusterException, RedisError

from bff.errors import SessionStoreUnavailable
from bff.session import redis_scripts
from bff.session.redis_pipeline import DEFAULT_MAX_REPLY, PipelinedConnection, ReplyError
from bff.session.redis_urls import StoreURL, connect, parse_store_url, pipelined_connection_for

# The URL helpers were defined here first; they stay importable from here.
__all__ = ["RedisStore", "StoreURL", "parse_store_url", "pipelined_connection_for"]


def _ms(ttl: float) -> int:
    """Seconds to whole milliseconds, at least 1; 0 for a TTL <= 0 (which deletes/never stores)."""
    return 0 if ttl <= 0 else max(1, round(ttl * 1000))


class RedisStore:
    """A ``SessionStore`` on Redis. Keys are ``prefix + key``, so several apps can share one database.

    Takes ownership of ``client`` (a ``redis.asyncio`` client created with ``decode_responses=False``) and closes
    it in ``aclose``. Build it with ``from_url`` to get the fail-fast timeouts.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        prefix: str = "bff:",
        *,
        display: str = "redis",
        replicas: int = 0,
        timeout: float = 2.0,
    ) -> None:
        if replicas and isinstance(client, RedisCluster):
            raise ValueError("store_replicas is not supported on Redis Cluster (WAIT needs the write's connection)")
        self._client = client
        self._prefix = prefix
        self._display = display  # names the server in error messages; never holds a password
        #: Replicas that must confirm a write (WAIT) before it counts; 0: the primary's answer is enough.
        self._replicas = replicas
        #: How long WAIT waits for them, in milliseconds: within the socket timeout, so the answer comes first.
        self._wait_ms = max(1, round(timeout * 1000 / 2))
        self._sentinel: Sentinel | None = None  # set by from_url: the sentinel clients are ours to close too
        # Set by from_url for a plain standalone Redis: the connection of the per-request GETEX.
        self._pipeline: PipelinedConnection | None = None
        self._closed = False
        # register_script computes the SHA1 only; EVALSHA loads the script on first use (and on NOSCRIPT after a
        # restart or failover), on whichever node owns the key.
        self._compare_and_set = client.register_script(redis_scripts.COMPARE_AND_SET)
        self._extend_lock = client.register_script(redis_scripts.EXTEND_LOCK)
        self._unlock = client.register_script(redis_scripts.UNLOCK)
        self._index_add = client.register_script(redis_scripts.INDEX_ADD)
        self._index_remove = client.register_script(redis_scripts.INDEX_REMOVE)
        self._index_members = client.register_script(redis_scripts.INDEX_MEMBERS)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "bff:",
        timeout: float = 2.0,
        max_reply: int = DEFAULT_MAX_REPLY,
        replicas: int = 0,
    ) -> RedisStore:
        """Connect lazily (no I/O here) to the Redis named by ``url`` (see ``StoreURL`` for the forms).

        Socket connect and read timeouts are ``timeout`` seconds and a timeout is not retried (a connection error
        is, once, at once; see the module docstring): the caller answers 503 rather than holding the request while
        Redis is away. ``max_reply`` bounds one reply of the per-request GETEX in bytes (the pipelined connection;
        redis-py's own replies are not bounded here). With ``replicas``, every write but the per-request GETEX and
        ``touch`` counts only once that many replicas confirmed it (see ``_write``). Raises ``ValueError`` for a URL
        it cannot use (see ``parse_store_url``), and for ``replicas`` on a Cluster.
        """
        clients = connect(url, timeout=timeout, max_reply=max_reply)
        store = cls(clients.client, prefix, display=clients.display, replicas=replicas, timeout=timeout)
        store._sentinel = clients.sentinel
        store._pipeline = clients.pipeline
        return store

    def __repr__(self) -> str:
        return f"RedisStore({self._display!r}, prefix={self._prefix!r})"

    async def get(self, key: str) -> bytes | None:
        with self._errors("GET"):
            return _bytes(await self._client.get(self._prefix + key))

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        ms = _ms(ttl)
        if ms:
            await self._write("SET", lambda c: c.set(self._prefix + key, value, px=ms))
        else:
            await self._write("DEL", lambda c: c.delete(self._prefix + key))

    async def set_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        ms = _ms(ttl)
        return bool(ms) and bool(
            await self._write("SET NX", lambda c: c.set(self._prefix + key, value, nx=True, px=ms))
        )

    async def compare_and_set(self, key: str, expected: bytes, value: bytes, ttl: float) -> bool:
        args: list[bytes | int] = [expected, value, _ms(ttl)]
        script = self._compare_and_set
        return int(await self._write("compare_and_set", lambda c: script([self._prefix + key], args, c))) == 1

    async def touch(self, key: str, ttl: float) -> bool:
        # Plain PEXPIRE: it already does nothing on a missing key. Its XX flag means "only if the key has a TTL",
        # not "only if it exists". A TTL of 0 deletes the key, as a TTL <= 0 must.
        with self._errors("PEXPIRE"):
            return await self._client.pexpire(self._prefix + key, _ms(ttl))

    async def get_and_touch(self, key: str, ttl: float) -> bytes | None:
        # GETEX (Redis >= 6.2) reads and sets the TTL in one command; PX 0 is an error there, so a TTL <= 0 is a
        # GETDEL, which is what "read, then expire now" means.
        ms = _ms(ttl)
        if ms and self._pipeline is not None and not self._closed:
            # Every proxied request comes here: the pipelined connection, and no context manager.
            try:
                return await self._pipelined(b"GETEX", (self._prefix + key).encode(), b"PX", b"%d" % ms)
            except _FAILURES as exc:
                raise self._unavailable("GETEX", exc) from exc
        with self._errors("GETEX" if ms else "GETDEL"):
            if not ms:
                return _bytes(await self._client.getdel(self._prefix + key))
            return _bytes(await self._client.getex(self._prefix + key, px=ms))

    async def _pipelined(self, *command: bytes) -> bytes | None:
        """A command whose reply is a bulk string or nil, on the pipelined connection. A connection error is retried
        once, at once, on a fresh connection, as redis-py's are (a Redis restart leaves the connection dead); a
        timeout never (it bounds the request). The retry is safe although the first command may have run: the
        only command sent here is GETEX with PX, and running it twice reads the same value and sets the same expiry
        (counted from the retry, microseconds later). A connection error also covers a reply that was no reply
        (the connection is dropped, never read on): the retry reads a fresh stream."""
        assert self._pipeline is not None
        try:
            reply = await self._pipeline(*command, bulk=True)
        except ConnectionError:
            reply = await self._pipeline(*command, bulk=True)
        return cast(bytes | None, reply)  # bulk=True: any other reply breaks the connection instead

    async def ttl(self, key: str) -> float | None:
        with self._errors("PTTL"):
            ms = await self._client.pttl(self._prefix + key)
        if ms == -2:  # no such key
            return None
        return math.inf if ms == -1 else ms / 1000  # -1: a key without TTL (never written by this store)

    async def take(self, key: str) -> bytes | None:
        return _bytes(await self._write("GETDEL", lambda c: c.getdel(self._prefix + key)))

    async def delete(self, key: str) -> bool:
        return int(await self._write("DEL", lambda c: c.delete(self._prefix + key))) > 0

    async def index_add(self, index: str, member: str, ttl: float) -> None:
        ms = _ms(ttl)
        if ms:
            script = self._index_add
            await self._write("index_add", lambda c: script([self._prefix + index], [member, ms], c))

    async def index_remove(self, index: str, member: str) -> None:
        script = self._index_remove
        await self._write("index_remove", lambda c: script([self._prefix + index], [member], c))

    async def index_members(self, index: str) -> list[str]:
        with self._errors("index_members"):
            members = await self._index_members(keys=[self._prefix + index])
        return [m.decode() if isinstance(m, bytes) else m for m in members]

    async def lock(self, key: str, ttl: float) -> str | None:
        token = secrets.token_urlsafe(16)
        ms = _ms(ttl)
        if not ms:
            return None
        try:
            taken = await self._write("SET NX", lambda c: c.set(self._prefix + key, token, nx=True, px=ms))
        except _NotConfirmed:
            # A lock the replicas do not hold would not survive a failover: its holder could refresh while another
            # instance, on the promoted replica, takes the same lock. Give it back and let the caller answer 503.
            with contextlib.suppress(SessionStoreUnavailable):
                await self.unlock(key, token)
            raise
        return token if taken else None

    async def extend_lock(self, key: str, token: str, ttl: float) -> bool:
        script, args = self._extend_lock, [token, str(_ms(ttl))]
        return int(await self._write("extend_lock", lambda c: script([self._prefix + key], args, c))) == 1

    async def unlock(self, key: str, token: str) -> bool:
        script = self._unlock
        return int(await self._write("unlock", lambda c: script([self._prefix + key], [token], c))) == 1

    async def ping(self) -> None:
        with self._errors("PING"):
            await self._client.ping()

    async def aclose(self) -> None:
        self._closed = True
        try:
            if self._pipeline is not None:
                await self._pipeline.aclose()
            await self._client.aclose()
        finally:
            if self._sentinel is not None:
                await self._sentinel.aclose()

    async def _write(self, command: str, queue: Callable[[Any], Awaitable[Any]]) -> Any:
        """Run one write command (``queue`` issues it on the client it is given) and return its reply.

        With ``replicas``, the command and a ``WAIT`` go out in one pipeline, so on one connection: WAIT counts the
        replicas holding every write *of its connection*. Redis replicates asynchronously, so a write only the
        primary holds is lost when a replica is promoted (a Sentinel failover, or a primary cut off from its
        replica while it still takes writes); one the replicas confirmed survives it. A write not confirmed within
        half the store timeout raises ``_NotConfirmed`` (a ``SessionStoreUnavailable``: 503, the session kept)
        although the primary may hold it.
        """
        with self._errors(command):
            if not self._replicas:
                return await queue(self._client)
            pipe = self._client.pipeline(transaction=False)
            await queue(pipe)
            pipe.execute_command("WAIT", self._replicas, self._wait_ms)
            reply, confirmed = await pipe.execute()
        if int(confirmed) < self._replicas:
            raise _NotConfirmed(
                f"session store {self._display}: {command} not confirmed by {self._replicas} replica(s) "
                f"within {self._wait_ms}ms"
            )
        return reply

    @contextlib.contextmanager
    def _errors(self, command: str) -> Iterator[None]:
        """Translate the client's failures into ``SessionStoreUnavailable``, keeping the cause.

        The message names the command, the server (``display``: no password) and the exception class, but not the
        exception's text: that is the cause's job, and only the cause is logged with a traceback.
        """
        if self._closed:
            raise SessionStoreUnavailable("session store is closed")
        try:
            yield
        except _FAILURES as exc:
            raise self._unavailable(command, exc) from exc

    def _unavailable(self, command: str, exc: BaseException) -> SessionStoreUnavailable:
        return SessionStoreUnavailable(f"session store {self._display}: {command} failed ({type(exc).__name__})")


class _NotConfirmed(SessionStoreUnavailable):
    """The primary took a write, but fewer replicas than ``store_replicas`` confirmed it in time."""


#: What the clients raise when the store fails. RedisClusterException is not a RedisError (e.g. SlotNotCoveredError
#: while the cluster is partly down); TimeoutError is asyncio.TimeoutError since Python 3.11 (an OSError too; named
#: for the reader).
_FAILURES = (TimeoutError, RedisError, RedisClusterException, OSError, ReplyError)


def _bytes(value: bytes | str | None) -> bytes | None:
    if isinstance(value, str):
        raise TypeError("RedisStore needs a client created with decode_responses=False")
    return value
