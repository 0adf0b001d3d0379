"""One pipelined connection to a standalone Redis, for the command every proxied request sends (``GETEX``).

Why not redis-py for it (issue 6): redis-py's asyncio client spends ~40 µs of CPU per command on this project's
reference box (a connection taken from and returned to a pool, argument-deprecation checks, observability hooks, a
task per write when a socket timeout is set), a sixth of bff's whole budget for a proxied request. This connection
spends ~13 µs: the command goes to the transport and its reply resolves a future, in order. Requests that arrive
together share the socket both ways: the commands sent in one turn of the event loop leave in one write (a write to
a socket is the dearest step of a command on this box: in ``make bench``, batching them cut bff's CPU per request
by ~15 %), and one read often carries many replies. Everything else the Redis store
does goes through redis-py, as do Sentinel, Cluster and TLS (``RedisStore.from_url`` decides).

The contract is the store's (``bff.session.redis_store``): fail fast and never hang. Every command waits at most
``timeout`` seconds, connecting included; a timeout closes the connection, and every command still waiting on it
fails with ``TimeoutError`` too (their replies would come after the lost one: the stream cannot be trusted any
more). So one timer per connection watches the oldest command's deadline, rather than a timeout scope per command
(``asyncio.timeout`` costs a timer, a task lookup and a context manager on every request). A lost
connection fails the commands waiting on it with ``ConnectionError``; the caller may retry once. The next command
connects again (``AUTH`` and ``SELECT`` first, pipelined). A caller that is cancelled leaves its reply to be read
and dropped, so the replies of the others stay in order. Redis error replies raise :class:`ReplyError`; none of
these messages carries the password.

RESP2 (https://redis.io/docs/latest/develop/reference/protocol-spec/): simple strings, errors, integers and bulk
strings are all the replies these commands have; anything else is a protocol error that closes the connection.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field
from typing import cast

_CRLF = b"\r\n"


class ReplyError(Exception):
    """Redis answered with an error (``-ERR ...``, ``-WRONGTYPE ...``)."""


@dataclass(frozen=True)
class Address:
    host: str = "localhost"
    port: int = 6379
    #: A Unix socket path (``unix://``) instead of host and port.
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)


Reply = bytes | int | None


def pack(*args: bytes) -> bytes:
    """A command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    """The socket: writes commands, parses replies into the waiting futures, FIFO."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.transport: asyncio.Transport | None = None
        self.loop = loop
        #: The futures of the commands sent, oldest first, each with its deadline (``loop.time()``).
        self.waiters: collections.deque[tuple[asyncio.Future[Reply], float]] = collections.deque()
        self.buffer = bytearray()
        self.closed = False
        self._watchdog: asyncio.TimerHandle | None = None
        #: Commands not written yet: they leave together at the end of this turn of the event loop.
        self._outgoing: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; uvloop's do not subclass asyncio.Transport, so this is a cast, not a check.
        self.transport = cast(asyncio.Transport, transport)

    def send(self, command: bytes, deadline: float) -> asyncio.Future[Reply]:
        """The future of ``command``'s reply; it fails with ``TimeoutError`` once ``deadline`` has passed."""
        if self.closed or self.transport is None:
            raise ConnectionError("the Redis connection is closed")
        loop = self.loop
        future: asyncio.Future[Reply] = loop.create_future()
        self.waiters.append((future, deadline))
        if self._watchdog is None:
            self._watchdog = loop.call_at(deadline, self._check_deadline)
        if not self._outgoing:
            loop.call_soon(self._flush)
        self._outgoing.append(command)
        return future

    def _check_deadline(self) -> None:
        """Fail the connection if its oldest command is overdue, else look again at that command's deadline."""
        self._watchdog = None
        if not self.waiters:
            return
        deadline = self.waiters[0][1]
        loop = self.loop
        if deadline <= loop.time():
            # The late reply would arrive where a later command's belongs: this connection cannot be trusted.
            self.abort(TimeoutError("a Redis command on this connection timed out"))
        else:
            self._watchdog = loop.call_at(deadline, self._check_deadline)

    def _flush(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        if not self.closed and self.transport is not None:  # else fail() has failed their futures already
            self.transport.write(b"".join(outgoing))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        position = 0
        try:
            while self.waiters:
                parsed = _parse(buffer, position)
                if parsed is None:
                    break
                reply, position = parsed
                future = self.waiters.popleft()[0]
                if future.done():  # its caller was cancelled: the reply is read and dropped
                    continue
                if isinstance(reply, ReplyError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        except ValueError:
            self.abort(ConnectionError("Redis sent something that is not a RESP reply"))
            return
        del buffer[:position]
        if buffer and not self.waiters:
            self.abort(ConnectionError("Redis sent a reply nobody asked for"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(ConnectionError("the Redis connection was lost"))

    def abort(self, error: Exception) -> None:
        self.fail(error)
        if self.transport is not None:
            self.transport.abort()

    def fail(self, error: Exception) -> None:
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self.waiters:
            future = self.waiters.popleft()[0]
            if not future.done():
                future.set_exception(error)


def _parse(buffer: bytearray, position: int) -> tuple[Reply | ReplyError, int] | None:
    """One reply at ``position``: (reply, position after it), or None when it has not all arrived yet."""
    end = buffer.find(_CRLF, position)
    if end < 0:
        return None
    kind, line = buffer[position], bytes(buffer[position + 1 : end])
    if kind == 0x24:  # "$": bulk string, or -1 for nil
        length = int(line)
        if length < 0:
            return None, end + 2
        stop = end + 2 + length
        if len(buffer) < stop + 2:
            return None
        return bytes(buffer[end + 2 : stop]), stop + 2
    if kind == 0x2B:  # "+": simple string
        return line, end + 2
    if kind == 0x3A:  # ":": integer
        return int(line), end + 2
    if kind == 0x2D:  # "-": error
        return ReplyError(line.decode("utf-8", "replace")), end + 2
    raise ValueError(f"unexpected RESP type {kind!r}")


class PipelinedConnection:
    """Commands on one connection, pipelined. Connects on first use; ``aclose()`` ends it."""

    def __init__(self, address: Address, *, timeout: float) -> None:
        self._address = address
        self._timeout = timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._closed = False

    async def __call__(self, *args: bytes) -> Reply:
        """Send one command and return its reply, within ``timeout`` seconds (connecting included). Raises
        ``TimeoutError``, ``ConnectionError`` (also when the connection was lost while the command waited: a retry
        may succeed) or :class:`ReplyError`."""
        protocol = self._protocol
        if protocol is not None and not protocol.closed:
            return await protocol.send(pack(*args), protocol.loop.time() + self._timeout)
        deadline = asyncio.get_running_loop().time() + self._timeout
        async with asyncio.timeout_at(deadline):
            protocol = await self._connection(deadline)
        return await protocol.send(pack(*args), deadline)

    async def aclose(self) -> None:
        self._closed = True
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.abort(ConnectionError("the Redis connection was closed"))

    async def _connection(self, deadline: float) -> _Protocol:
        if self._closed:
            raise ConnectionError("the Redis connection was closed")
        if self._protocol is not None and not self._protocol.closed:
            return self._protocol
        if self._connecting is not None:  # another command is connecting already: share its connection
            return await asyncio.shield(self._connecting)
        connecting = self._connecting = asyncio.get_running_loop().create_future()
        try:
            protocol = await self._connect(deadline)
        except BaseException as exc:
            error = exc if isinstance(exc, Exception) else ConnectionError("connecting to Redis was cancelled")
            connecting.set_exception(error)
            connecting.exception()  # marks it retrieved: there may be no other waiter
            raise
        finally:
            self._connecting = None
        self._protocol = protocol
        connecting.set_result(protocol)
        return protocol

    async def _connect(self, deadline: float) -> _Protocol:
        loop = asyncio.get_running_loop()
        address = self._address
        if address.path is not None:
            _, protocol = await loop.create_unix_connection(lambda: _Protocol(loop), address.path)
        else:
            _, protocol = await loop.create_connection(lambda: _Protocol(loop), address.host, address.port)
        handshake = []
        if address.password is not None:
            credentials = [address.username.encode()] if address.username else []
            handshake.append(protocol.send(pack(b"AUTH", *credentials, address.password.encode()), deadline))
        if address.db:
            handshake.append(protocol.send(pack(b"SELECT", str(address.db).encode()), deadline))
        try:
            for reply in handshake:
                await reply
        except BaseException:
            protocol.abort(ConnectionError("the Redis handshake failed"))
            raise
        return protocol
