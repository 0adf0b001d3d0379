"""The pipelined GETEX connection (``bff.session.redis_pipeline``) against a Redis that misbehaves on purpose.

A scripted fake Redis (an asyncio server on 127.0.0.1 speaking RESP) reads the connection's commands and answers
with replies split at any byte, garbage, lengths out of range, bulk strings whose terminator is wrong, unsolicited
bytes, a close or a reset at any byte, or nothing at all. Hypothesis writes the scripts. Every value is tagged with
the key it belongs to, so a reply matched to the wrong command shows. The invariants:

- a reply is never matched to the wrong command: every value a caller gets is its own key's;
- a caller that gives up (cancelled, or its own timeout) leaves its reply to be read and dropped, and the replies
  of the others stay in order: on an honest server nothing else fails;
- anything that is not a well-formed reply breaks the connection at once: the commands it carried fail with
  ``ConnectionError`` (the store's 503), never with a value;
- memory stays bounded: an announced 1 GiB bulk string is refused on its header, a line without end past the
  limit is refused too;
- a reply that stalls times the commands after it out with the connection, and none before it;
- the next command after a failure works, on a fresh connection.

The properties run on asyncio's loop and on uvloop (``bff serve``'s). The parser is also checked against redis-py's
own on generated and mutated streams: whatever it reads, redis-py reads the same. Then a real ``redis-server``
stopped, restarted and frozen under pipelined traffic: commands in flight fail (503) or get their own value, never
another's; a GETEX whose connection was lost is retried once on a fresh connection (safe: GETEX PX is idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import pytest
import uvloop
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from redis._parsers import Encoder
from redis._parsers.resp2 import _AsyncRESP2Parser
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bff.app import create_store
from bff.config import parse_config
from bff.errors import ConfigError, SessionStoreUnavailable
from bff.session.redis_pipeline import Address, PipelinedConnection, ReplyError, _parse
from bff.session.redis_store import RedisStore
from tests.support.configs import base_document
from tests.support.redis_server import RedisProcess

#: Every wait of these tests is bounded: a hang fails instead of hanging.
WAIT = 10.0
#: The default bound on one reply (``[session] store_max_reply``).
LIMIT = 1024 * 1024

Outcome = bytes | int | None | BaseException


def value_of(key: bytes, pad: int = 0) -> bytes:
    """The value stored under ``key``: names its key, and carries RESP-looking bytes that a parser must not read."""
    return b"<" + key + b">" + b"\r\n$3\r\n*1\r\n:7\r\n" * pad + b"</" + key + b">"


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


# -- the fake Redis ------------------------------------------------------------------------------------------------


class Peer:
    """One accepted connection of the fake Redis."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.sent = 0

    async def command(self) -> list[bytes]:
        """One command as ``pack`` writes it: a RESP array of bulk strings."""
        head = await self.reader.readuntil(b"\r\n")
        assert head[:1] == b"*", head
        args = []
        for _ in range(int(head[1:-2])):
            length = await self.reader.readuntil(b"\r\n")
            assert length[:1] == b"$", length
            args.append((await self.reader.readexactly(int(length[1:-2]) + 2))[:-2])
        return args

    async def send(self, data: bytes) -> None:
        if self.writer.transport.is_closing():  # uvloop raises RuntimeError on a write to a closed transport
            raise ConnectionResetError("the client hung up")
        self.writer.write(data)
        self.sent += len(data)
        await self.writer.drain()
        # Let the client read this chunk before the next one is written: the chunks arrive as separate reads.
        for _ in range(3):
            await asyncio.sleep(0)

    def reset(self) -> None:
        """Close with a TCP reset (SO_LINGER 0) instead of a FIN."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    async def closed_by_client(self) -> bool:
        """True once the client has closed its side (EOF or reset), within ``WAIT``."""
        try:
            async with asyncio.timeout(WAIT):
                while await self.reader.read(65536):
                    pass
        except ConnectionError:
            pass
        except TimeoutError:
            return False
        return True


def honest_reply(command: list[bytes]) -> bytes:
    if command[0] == b"GETEX":
        return bulk(value_of(command[1]))
    if command[0] == b"PING":
        return b"+PONG\r\n"
    return b"-ERR unknown command\r\n"


async def honest(peer: Peer) -> None:
    while True:
        await peer.send(honest_reply(await peer.command()))


Script = Callable[[Peer], Awaitable[None]]


class FakeRedis:
    """RESP on 127.0.0.1. Each new connection runs the next of ``scripts``; once they are used up, ``honest``."""

    def __init__(self) -> None:
        self.scripts: list[Script] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        script = self.scripts.pop(0) if self.scripts else honest
        try:
            await script(Peer(reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client closed: what the hostile scripts provoke
        finally:
            writer.close()
            self._writers.discard(writer)
            self._handlers.discard(task)

    async def aclose(self) -> None:
        for writer in list(self._writers):  # each script then ends on a ConnectionError
            writer.transport.abort()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=WAIT)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def connection(self, timeout: float = WAIT) -> PipelinedConnection:
        return PipelinedConnection(Address(host="127.0.0.1", port=self.port), timeout=timeout)


@pytest.fixture
async def fake() -> AsyncIterator[FakeRedis]:
    server = FakeRedis()
    await server.start()
    yield server
    await server.aclose()


@contextlib.contextmanager
def fake_on(runner: asyncio.Runner) -> Iterator[FakeRedis]:
    """A fake Redis on ``runner``'s loop, for Hypothesis tests (they drive the loop themselves, one example at a
    time)."""
    server = FakeRedis()
    runner.run(server.start())
    try:
        yield server
    finally:
        runner.run(server.aclose())


# -- scenarios: commands, their fates, the reply stream, a fault ---------------------------------------------------

#: Beyond this many pieces, the rest of a reply stream is sent at once.
MAX_CHUNKS = 2000

Fate = Literal["value", "absent", "error", "cancel", "timeout"]


@dataclass
class Command:
    key: bytes
    fate: Fate
    pad: int
    #: For "cancel" and "timeout": the caller gives up before this chunk of the reply stream is sent.
    give_up: int = 0

    @property
    def value(self) -> bytes:
        return value_of(self.key, self.pad)

    @property
    def reply(self) -> bytes:
        if self.fate == "absent":
            return b"$-1\r\n"
        if self.fate == "error":
            return b"-ERR for " + self.key + b"\r\n"
        return bulk(self.value)

    def right(self, outcome: Outcome) -> bool:
        """``outcome`` is what this command's own reply means."""
        if self.fate == "absent":
            return outcome is None
        if self.fate == "error":
            return isinstance(outcome, ReplyError) and str(outcome) == "ERR for " + self.key.decode()
        return outcome == self.value


FaultKind = Literal["none", "inject", "short-bulk", "terminator", "close", "reset", "stall", "extra"]

#: Bytes that are no reply of RESP2 or that no command of this connection gets: each breaks the connection at once.
GARBAGE = [
    b"!oops\r\n",
    b"x\r\n",
    b"\r\n",
    b"\x00\r\n",
    b"*1\r\n$1\r\nx\r\n",  # an array
    b"_\r\n",  # RESP3 null
    b"#t\r\n",  # RESP3 boolean
    b",1.5\r\n",  # RESP3 double
    b"%1\r\n",  # RESP3 map
    b">2\r\n",  # RESP3 push
    b"$-2\r\n",  # a negative length that is not nil
    b"$-100\r\n",
    b"$abc\r\n",
    b"$\r\n",
    b"$ 3\r\nabc\r\n",
    b"$+3\r\nabc\r\n",
    b"$1_0\r\n0123456789\r\n",
    b"$3 \r\nabc\r\n",
    b"$99999999999999999999999\r\n",
    b"$1073741824\r\n",  # 1 GiB announced: refused on its header
    b":12x\r\n",
    b": 12\r\n",
    b":1_2\r\n",
    b":\r\n",
    b"+OK\nINJECTED\r\n",  # a simple string never holds CR or LF
    b"-ERR\rINJECTED\r\n",
    b"+OK\r\n",  # well formed, but GETEX never gets a status...
    b":1\r\n",  # ...nor an integer
    b"+" + b"a" * (LIMIT + 2),  # a line without end, past the limit
]


@dataclass
class Scenario:
    commands: list[Command]
    cuts: list[int]
    fault: FaultKind = "none"
    #: "inject": the reply before which the garbage goes (len(commands): after the last);
    #: "short-bulk"/"terminator": the reply that is wrong; "close"/"reset": the byte offset of the stream.
    where: int = 0
    garbage: bytes = b""
    results: list[Outcome] = field(default_factory=list)

    def __repr__(self) -> str:  # the garbage may be a megabyte long
        return (
            f"Scenario({self.commands!r}, cuts={self.cuts!r}, fault={self.fault!r}, where={self.where!r}, "
            f"garbage={self.garbage[:40]!r}{'...' if len(self.garbage) > 40 else ''}, results={self.results!r})"
        )

    def stream(self) -> tuple[bytes, list[int]]:
        """The reply stream and where each command's reply ends in it (after the fault is applied)."""
        out, ends = bytearray(), []
        for i, command in enumerate(self.commands):
            if self.fault == "inject" and i == self.where:
                out += self.garbage
            reply = command.reply
            if i == self.where and self.fault == "short-bulk":
                reply = bulk(command.value).replace(b"$%d" % len(command.value), b"$%d" % (len(command.value) - 1), 1)
            elif i == self.where and self.fault == "terminator":
                reply = reply[:-2] + b"\n\r"
            out += reply
            ends.append(len(out))
        if self.fault in ("inject", "extra") and self.where >= len(self.commands):
            out += self.garbage
        return bytes(out), ends

    def chunks(self) -> list[bytes]:
        stream, _ = self.stream()
        if self.fault in ("close", "reset", "stall"):
            stream = stream[: self.where]
        bounds = [0, *sorted({c for c in self.cuts if 0 < c < len(stream)}), len(stream)]
        # At most MAX_CHUNKS pieces: a megabyte of garbage in 5-byte pieces would outlast any timeout.
        bounds = [*bounds[:MAX_CHUNKS], len(stream)]
        return [stream[a:b] for a, b in itertools.pairwise(bounds) if b > a]

    def broken_from(self) -> int:
        """The first command whose reply the fault reaches (len(commands) when none is)."""
        _, ends = self.stream()
        n = len(self.commands)
        if self.fault in ("inject", "short-bulk", "terminator"):
            return min(self.where, n)
        if self.fault in ("close", "reset", "stall"):
            return next((i for i, end in enumerate(ends) if end > self.where), n)
        return n


async def run(fake: FakeRedis, scenario: Scenario, store_timeout: float = WAIT) -> PipelinedConnection:
    """Send the scenario's commands at once on a fresh connection (whose commands time out after
    ``store_timeout``); the fake Redis answers with its stream. Fills ``scenario.results``; returns the connection
    for the next command."""
    loop = asyncio.get_running_loop()
    conn = fake.connection(store_timeout)
    scopes: dict[int, asyncio.Timeout] = {}
    tasks: list[asyncio.Task[bytes | int | None]] = []
    done_script = loop.create_future()

    async def call(i: int, command: Command) -> bytes | int | None:
        if command.fate == "timeout":
            async with asyncio.timeout(None) as scope:  # the caller's own timeout, fired by the script
                scopes[i] = scope
                return await conn(b"GETEX", command.key, b"PX", b"60000", bulk=True)
        return await conn(b"GETEX", command.key, b"PX", b"60000", bulk=True)

    def give_up(chunk: int) -> None:
        for i, command in enumerate(scenario.commands):
            if command.give_up == chunk and command.fate == "cancel":
                tasks[i].cancel()
            elif command.give_up == chunk and command.fate == "timeout" and not tasks[i].done():
                scopes[i].reschedule(loop.time())

    async def script(peer: Peer) -> None:
        try:
            assert await peer.command() == [b"PING"]
            await peer.send(b"+PONG\r\n")
            for command in scenario.commands:
                assert await peer.command() == [b"GETEX", command.key, b"PX", b"60000"]
            chunks = scenario.chunks()
            for j, chunk in enumerate(chunks):
                give_up(j)
                await peer.send(chunk)
            give_up(len(chunks))
            if scenario.fault == "close":
                peer.writer.close()
                return
            if scenario.fault == "reset":
                peer.reset()
                return
            if scenario.fault != "none":  # every other fault must make the client hang up
                done_script.set_result(await peer.closed_by_client())
                return
        except (ConnectionError, asyncio.IncompleteReadError):
            if scenario.fault == "none":
                raise
            # The client hung up at the fault (or, for a stall, at its timeout) before the script was done.
            done_script.set_result(True)
            return
        except BaseException as exc:
            if not done_script.done():  # the script's own failure fails the test, not just a log line
                done_script.set_exception(exc)
            raise
        finally:
            if not done_script.done():
                done_script.set_result(True)
        await honest(peer)

    fake.scripts.append(script)
    async with asyncio.timeout(WAIT):
        try:
            assert await conn(b"PING") == b"PONG"
        except TimeoutError:
            if store_timeout < WAIT:
                reject()  # a loaded machine took longer to connect than the short timeout: not this test's subject
            raise
        tasks.extend(asyncio.create_task(call(i, c)) for i, c in enumerate(scenario.commands))
        scenario.results = list(await asyncio.gather(*tasks, return_exceptions=True))
        assert await done_script, "the client kept a connection that sent what it should not have"
    return conn


def check(scenario: Scenario) -> None:
    """The invariants, command by command."""
    broken = scenario.broken_from()
    for i, (command, outcome) in enumerate(zip(scenario.commands, scenario.results, strict=True)):
        # Never a value that is not this command's own.
        if isinstance(outcome, bytes) or outcome is None:
            assert command.right(outcome), (i, command, outcome)
        if isinstance(outcome, ReplyError):
            assert command.right(outcome), (i, command, outcome)
        gave_up = (command.fate == "cancel" and isinstance(outcome, asyncio.CancelledError)) or (
            command.fate == "timeout" and isinstance(outcome, TimeoutError)
        )
        if gave_up:
            continue
        if i < broken and scenario.fault == "reset":  # a reset may drop what the client had not read yet
            assert command.right(outcome) or isinstance(outcome, ConnectionError), (i, command, outcome)
        elif i < broken and scenario.fault == "stall":  # a loaded machine may be slower than the short timeout
            assert command.right(outcome) or isinstance(outcome, TimeoutError), (i, command, outcome)
        elif i < broken:
            assert command.right(outcome), (i, command, outcome)
        else:
            failure = TimeoutError if scenario.fault == "stall" else ConnectionError
            assert isinstance(outcome, failure), (i, command, outcome)


async def next_command_works(fake: FakeRedis, conn: PipelinedConnection, *, retry_timeouts: int = 0) -> None:
    """The next command gets its value (on a fresh connection after a failure). A connection error is retried
    once, as the store does: a close the client has not seen yet fails the first command on that connection.
    ``retry_timeouts``: how many timeouts to forgive, for connections with a timeout shorter than a loaded
    machine's pauses."""
    async with asyncio.timeout(WAIT):
        for attempt in range(retry_timeouts + 1):
            try:
                reply = await conn(b"GETEX", b"next", b"PX", b"60000", bulk=True)
            except ConnectionError:
                reply = await conn(b"GETEX", b"next", b"PX", b"60000", bulk=True)
            except TimeoutError:
                if attempt == retry_timeouts:
                    raise
                continue
            break
    assert reply == value_of(b"next")
    await conn.aclose()


# -- property tests --------------------------------------------------------------------------------------------------

FATES: list[Fate] = ["value", "value", "value", "absent", "error", "cancel", "timeout"]


@st.composite
def commands(draw: st.DrawFn) -> list[Command]:
    n = draw(st.integers(1, 8))
    fates = draw(st.lists(st.sampled_from(FATES), min_size=n, max_size=n))
    pads = draw(st.lists(st.integers(0, 6), min_size=n, max_size=n))
    return [Command(b"k%d" % i, fate, pad) for i, (fate, pad) in enumerate(zip(fates, pads, strict=True))]


@st.composite
def scenarios(draw: st.DrawFn, faults: tuple[FaultKind, ...]) -> Scenario:
    cmds = draw(commands())
    scenario = Scenario(cmds, cuts=[])
    scenario.fault = draw(st.sampled_from(faults))
    n = len(cmds)
    if scenario.fault == "inject":
        scenario.where = draw(st.integers(0, n))
        scenario.garbage = draw(st.sampled_from(GARBAGE))
    elif scenario.fault == "extra":
        scenario.where = n
        scenario.garbage = draw(st.sampled_from([bulk(value_of(b"k0")), b"+OK\r\n", b"$-1\r\n", b"x", b"$5\r\nab"]))
    elif scenario.fault in ("short-bulk", "terminator"):
        candidates = [i for i, c in enumerate(cmds) if c.fate not in ("absent", "error")]
        if not candidates:
            scenario.fault = "none"
        else:
            scenario.where = draw(st.sampled_from(candidates))
    stream, _ = scenario.stream()
    if scenario.fault in ("close", "reset"):
        scenario.where = draw(st.integers(0, len(stream)))
    elif scenario.fault == "stall":  # some reply stays incomplete: the connection's own timeout ends the wait
        scenario.where = draw(st.integers(0, len(stream) - 1))
    # The reply stream in one piece, cut at generated points, in pieces of a few bytes, or at every byte.
    split = draw(st.sampled_from(["whole", "cuts", "cuts", "size", "every"]))
    if split == "cuts":
        scenario.cuts = draw(st.lists(st.integers(1, max(1, len(stream) - 1)), min_size=1, max_size=40))
    elif split == "size":
        size = draw(st.integers(1, 16))
        scenario.cuts = list(range(size, len(stream), size))
    elif split == "every":
        scenario.cuts = list(range(1, len(stream)))
    chunks = len(scenario.chunks())
    for command in cmds:
        command.give_up = draw(st.integers(0, chunks))
    return scenario


LoopFactory = Callable[[], asyncio.AbstractEventLoop]
#: asyncio's loop, and uvloop, which ``bff serve`` runs on: its transports are not asyncio's and read differently.
LOOPS = [pytest.param(asyncio.new_event_loop, id="asyncio"), pytest.param(uvloop.new_event_loop, id="uvloop")]


def examples(n: int) -> settings:
    """``n`` examples, no deadline (the loop and the sockets are real), nothing kept between runs."""
    return settings(
        max_examples=n,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )


@pytest.mark.parametrize("loop", LOOPS)
def test_replies_reach_their_own_commands_however_they_are_split(loop: LoopFactory) -> None:
    with asyncio.Runner(loop_factory=loop) as runner, fake_on(runner) as fake:

        @examples(300)
        @given(scenario=scenarios(("none",)))
        def honest_server(scenario: Scenario) -> None:
            async def body() -> None:
                conn = await run(fake, scenario)
                check(scenario)
                # Nothing failed that was not given up: the same connection goes on, replies still in order.
                assert conn._protocol is not None
                assert not conn._protocol.closed
                await next_command_works(fake, conn)

            runner.run(body())

        honest_server()


@pytest.mark.parametrize("loop", LOOPS)
def test_hostile_replies_break_the_connection_and_never_give_a_wrong_value(loop: LoopFactory) -> None:
    with asyncio.Runner(loop_factory=loop) as runner, fake_on(runner) as fake:

        @examples(500)
        @given(scenario=scenarios(("inject", "short-bulk", "terminator", "close", "reset", "extra")))
        def hostile_server(scenario: Scenario) -> None:
            async def body() -> None:
                conn = await run(fake, scenario)
                check(scenario)
                await next_command_works(fake, conn)

            runner.run(body())

        hostile_server()


def test_a_stalled_reply_times_out_the_commands_after_it_and_none_before() -> None:
    with asyncio.Runner() as runner, fake_on(runner) as fake:

        @examples(25)  # each waits for the connection's timeout
        @given(scenario=scenarios(("stall",)))
        def stalling_server(scenario: Scenario) -> None:
            async def body() -> None:
                conn = await run(fake, scenario, store_timeout=0.1)
                check(scenario)
                await next_command_works(fake, conn, retry_timeouts=3)

            runner.run(body())

        stalling_server()


# -- the parser against redis-py's ----------------------------------------------------------------------------------


def reply_bytes() -> st.SearchStrategy[tuple[bytes, object]]:
    """One well-formed RESP2 reply of the four types, and what it means."""
    line = st.binary(max_size=30).filter(lambda b: b"\r" not in b and b"\n" not in b)
    return st.one_of(
        st.binary(max_size=60).map(lambda b: (bulk(b), b)),
        st.just((b"$-1\r\n", None)),
        line.map(lambda b: (b"+" + b + b"\r\n", b)),
        st.integers(-(2**63), 2**63 - 1).map(lambda i: (b":%d\r\n" % i, i)),
        line.map(lambda b: (b"-" + b + b"\r\n", ReplyError)),
    )


def ours(stream: bytes) -> list[object]:
    """The replies this module reads from ``stream``, up to the first it refuses or that is incomplete."""
    buffer, position = bytearray(stream), 0
    replies: list[object] = []
    while True:
        try:
            parsed = _parse(buffer, position, LIMIT)
        except ValueError:
            return replies
        if parsed is None:
            return replies
        reply, position = parsed
        replies.append(ReplyError if isinstance(reply, ReplyError) else reply)


async def redis_pys(stream: bytes, count: int) -> list[object]:
    """The first ``count`` replies redis-py's own RESP2 parser reads from ``stream``."""
    reader = asyncio.StreamReader()
    reader.feed_data(stream)
    reader.feed_eof()
    parser = _AsyncRESP2Parser(65536)
    parser._stream = reader
    parser.encoder = Encoder("utf-8", "strict", decode_responses=False)  # type: ignore[no-untyped-call]
    parser._connected = True
    replies: list[object] = []
    for _ in range(count):
        try:
            reply = await parser.read_response(disable_decoding=True)
        except RedisError as exc:  # redis-py raises some error replies (LOADING, ...) instead of returning them
            reply = exc
        replies.append(ReplyError if isinstance(reply, RedisError) else reply)
    return replies


def test_the_parser_agrees_with_redis_pys_and_refuses_what_it_would_misread() -> None:
    with asyncio.Runner() as runner:

        @examples(1000)
        @given(
            replies=st.lists(reply_bytes(), min_size=1, max_size=8),
            mutation=st.tuples(st.integers(0, 10_000), st.sampled_from(["none", "flip", "insert", "delete"])),
            byte=st.integers(0, 255),
        )
        def agree(replies: list[tuple[bytes, object]], mutation: tuple[int, str], byte: int) -> None:
            stream = b"".join(wire for wire, _ in replies)
            # Well formed: every reply read, each what it means, as redis-py reads it.
            assert ours(stream) == [meaning for _, meaning in replies]
            assert runner.run(redis_pys(stream, len(replies))) == ours(stream)
            # One byte changed, added or removed: whatever this parser still reads, redis-py reads the same;
            # this parser refuses at least where redis-py would misread (it is the stricter of the two).
            at, how = mutation[0] % len(stream), mutation[1]
            if how == "flip":
                stream = stream[:at] + bytes([byte]) + stream[at + 1 :]
            elif how == "insert":
                stream = stream[:at] + bytes([byte]) + stream[at:]
            elif how == "delete":
                stream = stream[:at] + stream[at + 1 :]
            read = ours(stream)
            if read:
                assert runner.run(redis_pys(stream, len(read))) == read

        agree()


# -- examples --------------------------------------------------------------------------------------------------------


async def test_replies_split_at_every_byte(fake: FakeRedis) -> None:
    fates: list[Fate] = ["value", "absent", "error", "value"] * 3
    cmds = [Command(b"k%d" % i, fate, pad=i % 3) for i, fate in enumerate(fates)]
    cmds[4].fate, cmds[4].give_up = "cancel", 7
    cmds[9].fate, cmds[9].give_up = "timeout", 50
    scenario = Scenario(cmds, cuts=list(range(1, 2000)))
    conn = await run(fake, scenario)
    check(scenario)
    assert isinstance(scenario.results[4], asyncio.CancelledError)
    assert isinstance(scenario.results[9], TimeoutError)
    await next_command_works(fake, conn)


@pytest.mark.parametrize("garbage", GARBAGE, ids=lambda g: repr(g[:24]))
async def test_each_kind_of_garbage_breaks_the_connection(fake: FakeRedis, garbage: bytes) -> None:
    cmds = [Command(b"k%d" % i, "value", pad=1) for i in range(3)]
    scenario = Scenario(cmds, cuts=[], fault="inject", where=1, garbage=garbage)
    conn = await run(fake, scenario)
    check(scenario)
    assert scenario.commands[0].right(scenario.results[0])
    await next_command_works(fake, conn)


async def test_a_bulk_string_longer_than_announced_is_no_value(fake: FakeRedis) -> None:
    # "$3\r\nabcde\r\n" must not read as "abc": the bytes after a bulk string's payload must be its CRLF.
    scenario = Scenario([Command(b"k0", "value", pad=0)], cuts=[], fault="short-bulk", where=0)
    conn = await run(fake, scenario)
    assert isinstance(scenario.results[0], ConnectionError), scenario.results
    await next_command_works(fake, conn)


async def sent_until_refused(fake: FakeRedis, head: bytes, filler: bytes) -> tuple[int, PipelinedConnection]:
    """Answer one GETEX with ``head`` and then ``filler`` until 64 MiB or the client hangs up; the command must fail
    with a ``ConnectionError``. Returns how many bytes the server got to send, and the connection."""
    closed = asyncio.get_running_loop().create_future()

    async def flood(peer: Peer) -> None:
        await peer.command()
        await peer.send(head)
        try:
            while peer.sent < 64 * 1024 * 1024:
                await peer.send(filler)
        finally:
            closed.set_result(peer.sent)

    fake.scripts.append(flood)
    conn = fake.connection(timeout=WAIT)
    with pytest.raises(ConnectionError):
        async with asyncio.timeout(WAIT):
            await conn(b"GETEX", b"k", b"PX", b"1000")
    async with asyncio.timeout(WAIT):
        sent: int = await closed
    return sent, conn


async def test_an_announced_gigabyte_is_refused_on_its_header(fake: FakeRedis) -> None:
    sent, conn = await sent_until_refused(fake, b"$1073741824\r\n", b"x" * 65536)
    # The client hung up at the header: the server could not push much more than the socket buffers hold.
    assert sent < 16 * 1024 * 1024, sent
    await next_command_works(fake, conn)


async def test_a_line_without_end_is_refused_past_the_limit(fake: FakeRedis) -> None:
    sent, conn = await sent_until_refused(fake, b"+", b"a" * 65536)
    assert sent < LIMIT + 16 * 1024 * 1024, sent
    await next_command_works(fake, conn)


async def test_a_stalled_server_times_out_every_waiting_command(fake: FakeRedis) -> None:
    cmds = [Command(b"k%d" % i, "value", pad=0) for i in range(4)]
    stream = b"".join(c.reply for c in cmds)

    async def stall(peer: Peer) -> None:
        for _ in cmds:
            await peer.command()
        await peer.send(stream[: len(cmds[0].reply) + 3])  # the first reply and a bit of the second
        assert await peer.closed_by_client()

    fake.scripts.append(stall)
    conn = fake.connection(timeout=0.2)
    async with asyncio.timeout(WAIT):
        results = await asyncio.gather(*(conn(b"GETEX", c.key, b"PX", b"1") for c in cmds), return_exceptions=True)
    assert results[0] == cmds[0].value
    assert all(isinstance(r, TimeoutError) for r in results[1:]), results
    await next_command_works(fake, conn)


async def test_a_reply_before_its_command_was_written_is_refused(fake: FakeRedis) -> None:
    # Redis answers a command only after reading it: bytes that arrive while the command still waits to be written
    # (it leaves at the end of this turn of the event loop) answer nothing of ours.
    conn = fake.connection()
    async with asyncio.timeout(WAIT):
        assert await conn(b"PING") == b"PONG"
    protocol = conn._protocol
    assert protocol is not None
    future = protocol.send(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", asyncio.get_running_loop().time() + WAIT)
    protocol.data_received(bulk(b"forged"))  # as if read before the write
    with pytest.raises(ConnectionError):
        async with asyncio.timeout(WAIT):
            await future
    await next_command_works(fake, conn)


async def test_the_store_answers_503_for_a_hostile_reply_and_never_its_value(fake: FakeRedis) -> None:
    async def hostile(peer: Peer) -> None:
        while True:
            await peer.command()
            await peer.send(b"+OK\r\n")  # a status where GETEX has a bulk string or nil

    store = RedisStore.from_url(f"redis://127.0.0.1:{fake.port}/0", timeout=WAIT)
    try:
        # The store retries a connection error once, on a fresh connection: when both are hostile, 503.
        fake.scripts += [hostile, hostile]
        with pytest.raises(SessionStoreUnavailable):
            async with asyncio.timeout(WAIT):
                await store.get_and_touch("k", 60)
        # When the retry reaches an honest server, its value.
        fake.scripts.append(hostile)
        async with asyncio.timeout(WAIT):
            assert await store.get_and_touch("k", 60) == value_of(b"bff:k")
    finally:
        await store.aclose()


async def test_store_max_reply_bounds_one_reply(fake: FakeRedis) -> None:
    big = b"v" * 5000

    async def big_value(peer: Peer) -> None:
        while True:
            await peer.command()
            await peer.send(bulk(big))

    small = PipelinedConnection(Address(host="127.0.0.1", port=fake.port), timeout=WAIT, max_reply=4096)
    large = PipelinedConnection(Address(host="127.0.0.1", port=fake.port), timeout=WAIT, max_reply=8192)
    try:
        fake.scripts.append(big_value)
        with pytest.raises(ConnectionError):
            async with asyncio.timeout(WAIT):
                await small(b"GETEX", b"k", b"PX", b"1")
        fake.scripts.append(big_value)
        async with asyncio.timeout(WAIT):
            assert await large(b"GETEX", b"k", b"PX", b"1") == big
    finally:
        await small.aclose()
        await large.aclose()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, 1024 * 1024),
        ("64KiB", 64 * 1024),
        ("512MiB", 512 * 1024 * 1024),
        ("1KiB", "session.store_max_reply: must be at least 4KiB"),
        ("1GiB", "session.store_max_reply: must not exceed 512MiB"),
        ("lots", "session.store_max_reply: expected a size"),
    ],
)
def test_store_max_reply_is_a_config_key(value: str | None, expected: int | str) -> None:
    doc = base_document()
    if value is not None:
        doc["session"]["store_max_reply"] = value
    if isinstance(expected, int):
        assert parse_config(doc, env={}).session.store_max_reply == expected
        return
    with pytest.raises(ConfigError) as info:
        parse_config(doc, env={})
    assert any(p.startswith(expected) for p in info.value.problems), info.value.problems


async def test_store_max_reply_reaches_the_connection(fake: FakeRedis) -> None:
    doc = base_document()
    doc["session"]["store"] = f"redis://127.0.0.1:{fake.port}/0"
    doc["session"]["store_max_reply"] = "4KiB"
    store = create_store(parse_config(doc, env={}))
    assert isinstance(store, RedisStore)

    async def big_value(peer: Peer) -> None:
        while True:
            await peer.command()
            await peer.send(bulk(b"v" * 5000))

    try:
        fake.scripts += [big_value, big_value]
        with pytest.raises(SessionStoreUnavailable):
            async with asyncio.timeout(WAIT):
                await store.get_and_touch("k", 60)
    finally:
        await store.aclose()


# -- a real redis-server, stopped and frozen under pipelined traffic ------------------------------------------------


async def fill(url: str, keys: list[str], prefix: str = "bff:") -> None:
    client = Redis.from_url(url)
    try:
        await client.mset({prefix + key: value_of(key.encode(), 2) for key in keys})
    finally:
        await client.aclose()


async def assert_serves(store: RedisStore, keys: list[str]) -> None:
    """Every key reads back as :func:`fill` wrote it."""
    async with asyncio.timeout(WAIT):
        replies = await asyncio.gather(*(store.get_and_touch(key, 60) for key in keys))
    assert replies == [value_of(key.encode(), 2) for key in keys]


@pytest.mark.redis
async def test_a_restart_under_pipelined_traffic_never_gives_a_wrong_value(redis_process: RedisProcess) -> None:
    keys = [f"k{i}" for i in range(200)]
    await fill(redis_process.url, keys)
    store = RedisStore.from_url(redis_process.url, timeout=1.0)
    try:
        async with asyncio.timeout(WAIT):
            assert await store.get_and_touch("k0", 60) == value_of(b"k0", 2)  # connected
        # Frozen, Redis reads nothing: the commands below are written and in flight when it stops.
        await asyncio.to_thread(redis_process.pause)
        in_flight = [asyncio.ensure_future(store.get_and_touch(key, 60)) for key in keys]
        await asyncio.sleep(0.05)
        await asyncio.to_thread(redis_process.stop)
        async with asyncio.timeout(WAIT):
            outcomes = await asyncio.gather(*in_flight, return_exceptions=True)
        for key, outcome in zip(keys, outcomes, strict=True):
            # Redis may answer what it read before it stopped; anything else is a 503. A GETEX with PX is retried
            # once on a fresh connection: Redis is down then, so the retry fails too.
            assert outcome == value_of(key.encode(), 2) or isinstance(outcome, SessionStoreUnavailable), outcome
        await asyncio.to_thread(redis_process.start)  # empty: nothing is persisted
        async with asyncio.timeout(WAIT):
            assert await asyncio.gather(*(store.get_and_touch(key, 60) for key in keys[:20])) == [None] * 20
        await fill(redis_process.url, keys)
        await assert_serves(store, keys)
    finally:
        await store.aclose()


@pytest.mark.redis
async def test_restarts_while_traffic_flows(redis_process: RedisProcess) -> None:
    keys = [f"k{i}" for i in range(50)]
    await fill(redis_process.url, keys)
    store = RedisStore.from_url(redis_process.url, timeout=1.0)
    wrong: list[object] = []
    served = failed = 0
    stop = asyncio.Event()

    async def traffic(worker: int) -> None:
        nonlocal served, failed
        i = worker
        while not stop.is_set():
            key = keys[i % len(keys)]
            i += 7
            try:
                value = await store.get_and_touch(key, 60)
            except SessionStoreUnavailable:
                failed += 1
                await asyncio.sleep(0.001)
                continue
            served += 1
            if value not in (None, value_of(key.encode(), 2)):
                wrong.append((key, value))

    try:
        workers = [asyncio.ensure_future(traffic(w)) for w in range(20)]
        for _ in range(3):
            await asyncio.sleep(0.1)
            await asyncio.to_thread(redis_process.stop)
            await asyncio.sleep(0.05)
            await asyncio.to_thread(redis_process.start)
            await fill(redis_process.url, keys)
        await asyncio.sleep(0.1)
        stop.set()
        async with asyncio.timeout(WAIT):
            await asyncio.gather(*workers)
        assert wrong == []
        assert served > 0
        await assert_serves(store, keys)
    finally:
        await store.aclose()


@pytest.mark.redis
async def test_late_replies_of_a_frozen_redis_never_reach_later_commands(redis_process: RedisProcess) -> None:
    keys = [f"a{i}" for i in range(30)] + [f"b{i}" for i in range(30)]
    await fill(redis_process.url, keys)
    store = RedisStore.from_url(redis_process.url, timeout=0.3)
    try:
        async with asyncio.timeout(WAIT):
            assert await store.get_and_touch("a0", 60) == value_of(b"a0", 2)
        await asyncio.to_thread(redis_process.pause)
        try:
            async with asyncio.timeout(WAIT):
                outcomes = await asyncio.gather(
                    *(store.get_and_touch(key, 60) for key in keys[:30]), return_exceptions=True
                )
            assert all(isinstance(o, SessionStoreUnavailable) for o in outcomes), outcomes
            assert all(isinstance(o, BaseException) and isinstance(o.__cause__, TimeoutError) for o in outcomes)
        finally:
            await asyncio.to_thread(redis_process.resume)
        # Redis now answers the 30 commands it had read, on the connection bff dropped: none reaches these.
        await assert_serves(store, keys[30:])
    finally:
        await store.aclose()
