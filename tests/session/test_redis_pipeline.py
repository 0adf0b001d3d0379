"""The pipelined connection of the per-request GETEX (``bff.session.redis_pipeline``), against real servers and
against sockets that misbehave on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import cast
from uuid import uuid4

import pytest
from redis.asyncio import Redis

from bff.session.redis_pipeline import Address, PipelinedConnection, ReplyError, pack
from bff.session.redis_store import pipelined_connection_for
from tests.support.redis_server import RedisProcess, require_redis_server

PASSWORD = "pipe-Secret:/@"


def address_of(url: str) -> Address:
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    return Address(host="127.0.0.1", port=port)


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def connection(redis_url: str) -> AsyncIterator[PipelinedConnection]:
    conn = PipelinedConnection(address_of(redis_url), timeout=5)
    yield conn
    await conn.aclose()


@pytest.mark.parametrize(
    ("url", "fast"),
    [
        ("redis://127.0.0.1:6379/0", True),
        ("redis://user:pw@cache:6380/2", True),
        ("unix:///run/redis.sock?db=1", True),
        ("rediss://cache:6380/0", False),  # TLS stays with redis-py
        ("redis://cache:6379/0?client_name=bff", False),  # so does any query option
    ],
)
def test_which_urls_get_the_pipelined_connection(url: str, fast: bool) -> None:
    assert (pipelined_connection_for(url, 1.0) is not None) is fast


def test_pack_is_a_resp_array_of_bulk_strings() -> None:
    assert pack(b"GETEX", b"k", b"PX", b"10") == b"*4\r\n$5\r\nGETEX\r\n$1\r\nk\r\n$2\r\nPX\r\n$2\r\n10\r\n"


@pytest.mark.redis
async def test_replies_come_back_to_their_commands(connection: PipelinedConnection, raw: Redis) -> None:
    prefix = f"t{uuid4().hex}:"
    values = {f"{prefix}{i}".encode(): f"v{i}\r\n$3\r\n*".encode() * (i % 7) for i in range(300)}
    await raw.mset(values)
    keys = list(values)
    async with asyncio.timeout(10):
        replies = await asyncio.gather(*(connection(b"GETEX", key, b"PX", b"60000") for key in keys))
    assert replies == [values[key] for key in keys]
    assert await connection(b"GETEX", (prefix + "absent").encode(), b"PX", b"60000") is None
    assert await connection(b"PTTL", keys[0]) in range(59_000, 60_001)


@pytest.mark.redis
async def test_an_error_reply_is_raised_and_the_connection_goes_on(connection: PipelinedConnection, raw: Redis) -> None:
    key = f"t{uuid4().hex}:set"
    await raw.sadd(key, "member")
    with pytest.raises(ReplyError, match="WRONGTYPE"):
        await connection(b"GETEX", key.encode(), b"PX", b"1000")
    assert await connection(b"PING") == b"PONG"


@pytest.mark.redis
async def test_a_cancelled_caller_leaves_the_replies_in_order(connection: PipelinedConnection, raw: Redis) -> None:
    prefix = f"t{uuid4().hex}:"
    await raw.mset({f"{prefix}a": b"A", f"{prefix}b": b"B"})
    assert await connection(b"PING") == b"PONG"  # connected
    first = asyncio.ensure_future(connection(b"GET", f"{prefix}a".encode()))
    await asyncio.sleep(0)  # the command is written...
    first.cancel()  # ...and its caller leaves before the reply
    assert await connection(b"GET", f"{prefix}b".encode()) == b"B"
    with contextlib.suppress(asyncio.CancelledError):
        await first


@pytest.mark.redis
async def test_the_commands_of_one_loop_turn_leave_in_one_write(connection: PipelinedConnection, raw: Redis) -> None:
    prefix = f"t{uuid4().hex}:"
    await raw.mset({f"{prefix}{i}": f"v{i}" for i in range(10)})
    assert await connection(b"PING") == b"PONG"  # connected
    protocol = connection._protocol
    assert protocol is not None
    assert protocol.transport is not None
    transport, writes = protocol.transport, []

    class CountingTransport:
        def write(self, data: bytes) -> None:
            writes.append(data)
            transport.write(data)

        def __getattr__(self, name: str) -> object:
            return getattr(transport, name)

    protocol.transport = cast(asyncio.Transport, CountingTransport())
    replies = await asyncio.gather(*(connection(b"GET", f"{prefix}{i}".encode()) for i in range(10)))
    assert replies == [f"v{i}".encode() for i in range(10)]
    assert len(writes) == 1, writes
    assert await connection(b"GET", f"{prefix}3".encode()) == b"v3"  # and alone, at once
    assert len(writes) == 2


@pytest.mark.redis
def test_it_runs_on_uvloop(redis_url: str) -> None:
    # bff serve runs on uvloop, whose transports are not asyncio.Transport subclasses.
    import uvloop

    async def run() -> object:
        conn = PipelinedConnection(address_of(redis_url), timeout=5)
        try:
            return await conn(b"PING")
        finally:
            await conn.aclose()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(run()) == b"PONG"


async def test_credentials_and_database_are_sent_first() -> None:
    with RedisProcess(require_redis_server(), args=["--requirepass", PASSWORD]) as server:
        client = Redis(port=server.port, password=PASSWORD, db=3)
        try:
            await client.set("k", b"in db 3")
        finally:
            await client.aclose()
        good = PipelinedConnection(Address(port=server.port, password=PASSWORD, db=3), timeout=5)
        bad = PipelinedConnection(Address(port=server.port, password="wrong"), timeout=5)
        try:
            assert await good(b"GET", b"k") == b"in db 3"
            with pytest.raises(ReplyError) as info:
                await bad(b"GET", b"k")
            assert PASSWORD not in str(info.value)
            assert "wrong" not in str(info.value)
        finally:
            await good.aclose()
            await bad.aclose()


@contextlib.contextmanager
def fake_server(answer: Callable[[socket.socket], None]) -> Iterator[int]:
    """A TCP server in a thread that hands its one connection to ``answer``."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(10)

    def serve() -> None:
        with contextlib.suppress(OSError):
            client, _ = listener.accept()
            with client:
                answer(client)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()
        thread.join(timeout=5)


def read_then(reply: bytes) -> Callable[[socket.socket], None]:
    def answer(client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            client.recv(65536)
            client.sendall(reply)
            while client.recv(65536):  # until the other side closes
                pass

    return answer


async def wait_all(calls: list[Awaitable[object]]) -> list[object]:
    async with asyncio.timeout(10):
        return await asyncio.gather(*calls, return_exceptions=True)


async def test_a_timeout_fails_every_command_waiting_on_the_connection() -> None:
    with fake_server(read_then(b"")) as port:  # reads the commands, never answers
        conn = PipelinedConnection(Address(port=port), timeout=0.2)
        try:
            results = await wait_all([conn(b"GET", b"a"), conn(b"GET", b"b")])
        finally:
            await conn.aclose()
    assert all(isinstance(r, TimeoutError) for r in results), results


async def test_a_slow_reply_within_its_own_deadline_is_no_timeout() -> None:
    def answer_slowly(client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            for _ in range(2):
                client.recv(65536)
                time.sleep(0.2)
                client.sendall(b"+PONG\r\n")

    with fake_server(answer_slowly) as port:
        conn = PipelinedConnection(Address(port=port), timeout=0.3)
        try:
            # The first command's deadline passes while the second waits, well within its own.
            assert await conn(b"PING") == b"PONG"
            assert await conn(b"PING") == b"PONG"
        finally:
            await conn.aclose()


async def test_a_reply_that_is_not_resp_closes_the_connection() -> None:
    with fake_server(read_then(b"*1\r\n$1\r\nx\r\n")) as port:  # an array: no command of ours gets one
        conn = PipelinedConnection(Address(port=port), timeout=5)
        try:
            [result] = await wait_all([conn(b"GET", b"a")])
        finally:
            await conn.aclose()
    assert isinstance(result, ConnectionError)


async def test_a_connection_closed_under_a_command_is_a_connection_error() -> None:
    def hang_up(client: socket.socket) -> None:
        client.recv(65536)

    with fake_server(hang_up) as port:
        conn = PipelinedConnection(Address(port=port), timeout=5)
        try:
            [result] = await wait_all([conn(b"GET", b"a")])
        finally:
            await conn.aclose()
    assert isinstance(result, ConnectionError)


async def test_a_closed_connection_refuses_commands(redis_url: str) -> None:
    conn = PipelinedConnection(address_of(redis_url), timeout=5)
    await conn.aclose()
    with pytest.raises(ConnectionError):
        await conn(b"PING")


async def test_a_command_sharing_a_connect_whose_caller_is_cancelled_gets_a_connection_error() -> None:
    """The first command connects for every command that waits meanwhile; its caller cancelled (a browser that left,
    a shutdown) ends the connect, and the commands sharing it get a ``ConnectionError`` (503, retried), never the
    other caller's cancellation."""
    authenticating = threading.Event()

    def never_answer(client: socket.socket) -> None:  # the connect stays in its handshake
        with contextlib.suppress(OSError):
            client.recv(65536)
            authenticating.set()
            while client.recv(65536):  # until the other side closes
                pass

    with fake_server(never_answer) as port:
        conn = PipelinedConnection(Address(port=port, password=PASSWORD), timeout=5)
        try:
            connecting = asyncio.create_task(conn(b"GET", b"a"))
            while not authenticating.is_set():  # noqa: ASYNC110 - the server runs in another thread
                await asyncio.sleep(0.01)
            sharing = asyncio.create_task(conn(b"GET", b"b"))
            await asyncio.sleep(0)  # it waits on that connect
            connecting.cancel()
            [result] = await wait_all([sharing])
        finally:
            await conn.aclose()
    assert connecting.cancelled()
    assert isinstance(result, ConnectionError), result
