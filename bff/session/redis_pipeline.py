"""One pipelined connection to a standalone Redis, for the command every proxied request sends (``GETEX``).

Why not redis-py for it: redis-py's asyncio client does per command what this one command never needs (a
connection taken from and returned to a pool, argument-deprecation checks, observability hooks, a task per write
when a socket timeout is set); here the command goes to the transport and its reply resolves a future, in order.
Requests that arrive together share the socket both ways: the commands sent in one turn of the event loop leave in
one write (a socket write is the dearest step of a command), and one read often carries many replies. The figures
are in docs/performance.md. Everything else the Redis store
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
strings are all the replies these commands have. Redis is trusted no more than any other peer: a reply is read
strictly or not at all, and anything else closes the connection and fails every command waiting on it with
``ConnectionError`` (the stream cannot be trusted after it), never with a value. Refused: any other type byte
(arrays, RESP3), a length or an integer that is not plain ASCII digits (``int()`` would take " 3", "+3", "1_0"), a
negative bulk length other than nil's ``-1``, a bulk string not followed by CRLF (a wrong length would otherwise
shift every later reply onto the wrong command), a simple string or error holding CR or LF, a reply to a command
not written yet (Redis answers only what it has read), bytes that no command waits for, and a reply of the wrong
type for its command (GETEX asks ``bulk=True``: a bulk string, nil or an error, never a status or an integer).
Memory is bounded: a bulk string longer than ``max_reply`` is refused on its header, before any of it is
buffered, and so is a line longer than that, so the buffer holds at most one reply and one read.

Why not a library's parser: ``hiredis`` (a C extension, not a dependency of bff) takes RESP3 types and arrays,
allocates for an array's announced count before its elements arrive, and skips a bulk string's terminator without
looking at it; redis-py's own parser pulls from a ``StreamReader`` (a reader task and an await per reply) and is
private API. The four reply types these commands have are parsed here, and
``tests/session/test_redis_pipeline_adversarial.py`` checks this parser against redis-py's on generated streams.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field
from typing import cast

_CRLF = b"\r\n"
#: The type bytes of the replies read here: bulk string, simple string, integer, error.
_BULK, _SIMPLE, _INTEGER, _ERROR = 0x24, 0x2B, 0x3A, 0x2D
_KINDS = b"$+:-"
#: Digits of a signed 64-bit integer, Redis's integer replies (and more than any bulk length it may send).
_MAX_DIGITS = 19
#: The largest reply accepted unless configured (``[session] store_max_reply``): a session record is ~1-2 KB.
DEFAULT_MAX_REPLY = 1024 * 1024


class ReplyError(Exception):
    """Redis answered with an error (``-ERR ...``, ``-WRONGTYPE ...``)."""


class Status(bytes):
    """A simple string reply (``+OK``, ``+PONG``): bytes, but never taken for a bulk string's value."""


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

    def __init__(self, loop: asyncio.AbstractEventLoop, max_reply: int = DEFAULT_MAX_REPLY) -> None:
        self.transport: asyncio.Transport | None = None
        self.loop = loop
        self.max_reply = max_reply
        #: The futures of the commands sent, oldest first, each with its deadline (``loop.time()``) and whether
        #: only a bulk string, nil or an error may answer it.
        self.waiters: collections.deque[tuple[asyncio.Future[Reply], float, bool]] = collections.deque()
        self.buffer = bytearray()
        self.closed = False
        self._watchdog: asyncio.TimerHandle | None = None
        #: Commands not written yet: they leave together at the end of this turn of the event loop.
        self._outgoing: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; uvloop's do not subclass asyncio.Transport, so this is a cast, not a check.
        self.transport = cast(asyncio.Transport, transport)

    def send(self, command: bytes, deadline: float, bulk: bool = False) -> asyncio.Future[Reply]:
        """The future of ``command``'s reply; it fails with ``TimeoutError`` once ``deadline`` has passed. With
        ``bulk``, any reply but a bulk string, nil or an error breaks the connection."""
        if self.closed or self.transport is None:
            raise ConnectionError("the Redis connection is closed")
        loop = self.loop
        future: asyncio.Future[Reply] = loop.create_future()
        self.waiters.append((future, deadline, bulk))
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
        waiters = self.waiters
        # Only the commands already written can be answered: the tail of ``waiters`` still waits in ``_outgoing``.
        written = len(waiters) - len(self._outgoing)
        try:
            while written:
                parsed = _parse(buffer, position, self.max_reply)
                if parsed is None:
                    break
                reply, position = parsed
                entry = waiters.popleft()
                written -= 1
                if type(reply) is not bytes and entry[2] and reply is not None and type(reply) is not ReplyError:
                    waiters.appendleft(entry)  # so that abort() fails it with the others
                    self.abort(ConnectionError("Redis answered a command with a reply of the wrong type"))
                    return
                future = entry[0]
                if future.done():  # its caller gave up: the reply is read and dropped
                    continue
                if isinstance(reply, ReplyError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        except ValueError as exc:
            self.abort(ConnectionError(f"Redis sent something that is not a RESP reply: {exc}"))
            return
        if not written and len(buffer) > position:
            self.abort(ConnectionError("Redis sent bytes that no command waits for"))
            return
        del buffer[:position]

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


def _parse(buffer: bytearray, position: int, limit: int) -> tuple[Reply | ReplyError, int] | None:
    """One reply at ``position``: (reply, position after it), or None when it has not all arrived yet. Raises
    ``ValueError`` for anything that is not a well-formed reply of the four types, or longer than ``limit``."""
    end = buffer.find(_CRLF, position)
    if end < 0:
        # Not all here: refuse at once what can never become a reply, rather than buffer it until the deadline.
        if position < len(buffer) and buffer[position] not in _KINDS:
            raise ValueError(f"unexpected RESP type {buffer[position]:#04x}")
        if len(buffer) - position > limit + 2:
            raise ValueError(f"a line longer than {limit} bytes")
        return None
    kind, line = buffer[position], bytes(buffer[position + 1 : end])
    if kind == _BULK:  # a bulk string, or -1 for nil
        if not line.isdigit():
            if line == b"-1":
                return None, end + 2
            raise ValueError("a bulk string length that is neither digits nor -1")
        length = int(line) if len(line) <= _MAX_DIGITS else limit + 1
        if length > limit:
            raise ValueError(f"a bulk string longer than {limit} bytes")
        stop = end + 2 + length
        if len(buffer) < stop + 2:
            return None
        if not buffer.startswith(_CRLF, stop):
            raise ValueError("a bulk string not followed by CRLF")
        return bytes(buffer[end + 2 : stop]), stop + 2
    if end - position > limit + 1:
        raise ValueError(f"a line longer than {limit} bytes")
    if kind in (_SIMPLE, _ERROR):
        if 0x0D in line or 0x0A in line:  # CR or LF: RESP's simple strings and errors never hold them
            raise ValueError("a simple string or error holding CR or LF")
        if kind == _SIMPLE:
            return Status(line), end + 2
        return ReplyError(line.decode("utf-8", "replace")), end + 2
    if kind == _INTEGER:
        digits = line[1:] if line[:1] == b"-" else line
        if not digits.isdigit() or len(digits) > _MAX_DIGITS:
            raise ValueError("an integer that is not digits")
        return int(line), end + 2
    raise ValueError(f"unexpected RESP type {kind:#04x}")


class PipelinedConnection:
    """Commands on one connection, pipelined. Connects on first use; ``aclose()`` ends it."""

    def __init__(self, address: Address, *, timeout: float, max_reply: int = DEFAULT_MAX_REPLY) -> None:
        self._address = address
        self._timeout = timeout
        self._max_reply = max_reply
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._closed = False

    async def __call__(self, *args: bytes, bulk: bool = False) -> Reply:
        """Send one command and return its reply, within ``timeout`` seconds (connecting included). Raises
        ``TimeoutError``, ``ConnectionError`` (also when the connection was lost while the command waited, or the
        reply was not one: a retry may succeed) or :class:`ReplyError`. With ``bulk``, the reply is a bulk string
        or nil (``bytes`` or None), anything else breaks the connection."""
        protocol = self._protocol
        if protocol is not None and not protocol.closed:
            return await protocol.send(pack(*args), protocol.loop.time() + self._timeout, bulk)
        deadline = asyncio.get_running_loop().time() + self._timeout
        async with asyncio.timeout_at(deadline):
            protocol = await self._connection(deadline)
        return await protocol.send(pack(*args), deadline, bulk)

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
        max_reply = self._max_reply
        if address.path is not None:
            _, protocol = await loop.create_unix_connection(lambda: _Protocol(loop, max_reply), address.path)
        else:
            _, protocol = await loop.create_connection(lambda: _Protocol(loop, max_reply), address.host, address.port)
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
