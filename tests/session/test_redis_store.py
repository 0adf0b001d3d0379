"""What only the Redis store has: URLs, failing fast, surviving a Redis restart, key layout, the commands it sends."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from redis.asyncio import Redis

import bff.session.redis_scripts
import bff.session.redis_store
import bff.session.redis_urls
from bff.errors import SessionStoreUnavailable
from bff.session.redis_store import RedisStore, StoreURL, parse_store_url
from tests.support.redis_ha import replicate
from tests.support.redis_server import RedisProcess, command, free_port, require_redis_server

SECRET = "hunter2-Secret"


def every_call(store: RedisStore) -> list[Callable[[], Awaitable[object]]]:
    return [
        lambda: store.get("k"),
        lambda: store.set("k", b"v", 10),
        lambda: store.set_if_absent("k", b"v", 10),
        lambda: store.compare_and_set("k", b"v", b"w", 10),
        lambda: store.touch("k", 10),
        lambda: store.get_and_touch("k", 10),
        lambda: store.ttl("k"),
        lambda: store.take("k"),
        lambda: store.delete("k"),
        lambda: store.index_add("i", "m", 10),
        lambda: store.index_remove("i", "m"),
        lambda: store.index_members("i"),
        lambda: store.lock("l", 10),
        lambda: store.extend_lock("l", "t", 10),
        lambda: store.unlock("l", "t"),
        store.ping,
    ]


def assert_no_secret(exc: BaseException) -> None:
    """Neither the error nor anything in its cause chain names the password."""
    seen: BaseException | None = exc
    while seen is not None:
        assert SECRET not in str(seen)
        assert SECRET not in repr(seen)
        seen = seen.__cause__ or seen.__context__


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[Redis]:
    """A plain client on the suite's Redis, to look behind the store's back."""
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel's backlog does) but never answers: a hung Redis."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield int(server.getsockname()[1])


# -- failing fast, without secrets -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{SECRET}@127.0.0.1:{{port}}/0",
        f"redis+sentinel://:{SECRET}@127.0.0.1:{{port}}/mymaster",
        f"redis+cluster://user:{SECRET}@127.0.0.1:{{port}}",
    ],
    ids=["standalone", "sentinel", "cluster"],
)
async def test_unreachable_redis_fails_every_call_fast_without_the_password(url: str) -> None:
    store = RedisStore.from_url(url.format(port=free_port()), timeout=0.5)
    assert SECRET not in repr(store)
    try:
        for call in every_call(store):
            started = time.monotonic()
            with pytest.raises(SessionStoreUnavailable) as info:
                await call()
            assert time.monotonic() - started < 1.0
            assert info.value.__cause__ is not None  # translated with "from", the cause kept for the logs
            assert info.value.status == 503
            assert_no_secret(info.value)
    finally:
        await store.aclose()


async def test_a_hung_redis_costs_one_timeout_not_retries(silent_port: int) -> None:
    # Were timeouts retried (redis-py's Redis() constructor defaults to 10 retries with backoff), this would take
    # seconds.
    store = RedisStore.from_url(f"redis://:{SECRET}@127.0.0.1:{silent_port}/0", timeout=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(SessionStoreUnavailable) as info:
            await store.get("k")
        assert 0.15 < time.monotonic() - started < 0.6
        assert "TimeoutError" in str(info.value)
        assert_no_secret(info.value)
    finally:
        await store.aclose()


async def test_a_hung_redis_fails_the_pipelined_read_with_a_timeout(silent_port: int) -> None:
    # get_and_touch goes over bff's own pipelined connection: its timeout is a timeout too, never retried.
    store = RedisStore.from_url(f"redis://:{SECRET}@127.0.0.1:{silent_port}/0", timeout=0.2)
    try:
        with pytest.raises(SessionStoreUnavailable) as info:
            await store.get_and_touch("k", 10)
        assert isinstance(info.value.__cause__, TimeoutError)
        assert "GETEX failed (TimeoutError)" in str(info.value)
        assert_no_secret(info.value)
    finally:
        await store.aclose()


# -- Redis goes away and comes back ------------------------------------------------------------------------------


@pytest.mark.redis
async def test_store_answers_503_while_redis_is_down_and_recovers_when_it_returns(redis_process: RedisProcess) -> None:
    store = RedisStore.from_url(redis_process.url, timeout=0.5)
    try:
        await store.set("k", b"before", 60)
        await asyncio.to_thread(redis_process.stop)
        for call in every_call(store):
            with pytest.raises(SessionStoreUnavailable):
                await call()
        await asyncio.to_thread(redis_process.start)
        await store.ping()
        await store.set("k", b"after", 60)
        assert await store.get("k") == b"after"
    finally:
        await store.aclose()


@pytest.mark.redis
async def test_pooled_connections_survive_a_restart_nobody_saw(redis_process: RedisProcess) -> None:
    # Redis restarts while bff is idle: every pooled connection is dead. The first calls must not fail.
    store = RedisStore.from_url(redis_process.url, timeout=0.5)
    try:
        await asyncio.gather(*(store.set(f"k{i}", b"v", 60) for i in range(5)))  # fills the pool
        await asyncio.to_thread(redis_process.stop)
        await asyncio.sleep(0.05)  # let the loop see the connections close, as it would in a real pause
        await asyncio.to_thread(redis_process.start)
        assert await asyncio.gather(*(store.get(f"k{i}") for i in range(5))) == [None] * 5  # nothing persisted
        # The pipelined connection of get_and_touch died with Redis too: it reconnects as well.
        await store.set("k0", b"v", 60)
        assert await store.get_and_touch("k0", 60) == b"v"
        await asyncio.to_thread(redis_process.stop)
        await asyncio.to_thread(redis_process.start)  # this time the loop may not have seen the connection close
        assert await store.get_and_touch("k0", 60) is None
    finally:
        await store.aclose()


@pytest.mark.redis
async def test_unix_socket_url(tmp_path: Path) -> None:
    socket_path = tmp_path / "redis.sock"
    with RedisProcess(require_redis_server(), args=["--unixsocket", str(socket_path)]):
        store = RedisStore.from_url(f"unix://{socket_path}?db=1", timeout=0.5)
        try:
            await store.set("k", b"\x00v", 60)
            assert await store.get("k") == b"\x00v"
            assert await store.get_and_touch("k", 60) == b"\x00v"  # the pipelined connection selects db 1 too
        finally:
            await store.aclose()


# -- URLs --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis://:pw@cache:6380/2",
            StoreURL("standalone", "redis://cache:6380/2", "redis://:pw@cache:6380/2"),
        ),
        (
            "rediss://bff:pw@cache/0",
            StoreURL("standalone", "rediss://bff@cache/0", "rediss://bff:pw@cache/0", ssl=True),
        ),
        (
            "unix:///run/redis.sock?db=1&password=pw",
            StoreURL("standalone", "unix:///run/redis.sock", "unix:///run/redis.sock?db=1&password=pw"),
        ),
        (
            "redis+sentinel://:p%40ss%2Fw@s1:26380,s2,[::1]:5000/my%20master/3",
            StoreURL(
                "sentinel",
                "redis+sentinel://s1:26380,s2,[::1]:5000/my%20master/3",
                "redis+sentinel://:p%40ss%2Fw@s1:26380,s2,[::1]:5000/my%20master/3",
                nodes=(("s1", 26380), ("s2", 26379), ("::1", 5000)),
                service_name="my master",
                db=3,
                password="p@ss/w",
            ),
        ),
        (
            "rediss+sentinel://app:pw@s1/mymaster",
            StoreURL(
                "sentinel",
                "rediss+sentinel://app@s1/mymaster",
                "rediss+sentinel://app:pw@s1/mymaster",
                ssl=True,
                nodes=(("s1", 26379),),
                service_name="mymaster",
                username="app",
                password="pw",
            ),
        ),
        (
            "redis+cluster://n1:7000,N2:7001,n3",
            StoreURL(
                "cluster",
                "redis+cluster://n1:7000,N2:7001,n3",
                "redis+cluster://n1:7000,N2:7001,n3",
                nodes=(("n1", 7000), ("n2", 7001), ("n3", 6379)),
            ),
        ),
        (
            "rediss+cluster://:pw@n1:7000/0",
            StoreURL(
                "cluster",
                "rediss+cluster://n1:7000/0",
                "rediss+cluster://:pw@n1:7000/0",
                ssl=True,
                nodes=(("n1", 7000),),
                password="pw",
            ),
        ),
    ],
    ids=["redis", "rediss-user", "unix-query", "sentinel", "sentinel-tls-user", "cluster", "cluster-tls"],
)
def test_parse_store_url(url: str, expected: StoreURL) -> None:
    parsed = parse_store_url(url)
    assert parsed == expected
    assert "pw" not in repr(parsed)
    assert "pw" not in parsed.display


@pytest.mark.parametrize(
    "url",
    [
        f"http://:{SECRET}@cache/0",
        f"redis+sentinel://:{SECRET}@s1:26379",
        f"redis+sentinel://:{SECRET}@s1:26379/",
        f"redis+sentinel://:{SECRET}@s1:26379/mymaster/x",
        f"redis+sentinel://:{SECRET}@s1:26379/mymaster/1/2",
        f"redis+sentinel://:{SECRET}@s1:26379,/mymaster",
        f"redis+sentinel://:{SECRET}@s1:99999/mymaster",
        f"redis+sentinel://:{SECRET}@s1:port/mymaster",
        f"redis+cluster://:{SECRET}@n1:7000/1",
        f"redis+cluster://:{SECRET}@n1:7000?ssl=true",
        f"redis://:{SECRET}/x@cache/0",
        f"redis+sentinel://:{SECRET}#x@s1/mymaster",
    ],
    ids=[
        "scheme",
        "no-service",
        "empty-service",
        "bad-db",
        "extra-path",
        "empty-host",
        "port-range",
        "port-text",
        "cluster-db",
        "cluster-query",
        "unescaped-slash",
        "unescaped-hash",
    ],
)
def test_parse_store_url_rejects_without_echoing_the_password(url: str) -> None:
    with pytest.raises(ValueError, match=r"\S") as info:
        parse_store_url(url)
    assert SECRET not in str(info.value)
    assert "Secret" not in str(info.value)  # nor a piece of it


# -- key layout and commands -------------------------------------------------------------------------------------


@pytest.mark.redis
async def test_keys_live_under_the_prefix_and_all_expire(redis_url: str, raw: Redis) -> None:
    prefix = f"t{uuid4().hex}:"
    store = RedisStore.from_url(redis_url, prefix=prefix)
    try:
        await store.set("value", b"v", 60)
        await store.index_add("index", "member", 60)
        assert await store.lock("lock", 60)
    finally:
        await store.aclose()
    for key in ("value", "index", "lock"):
        assert not await raw.exists(key)
        assert 0 < await raw.pttl(prefix + key) <= 60_000
    assert await raw.get(prefix + "value") == b"v"
    assert await raw.hkeys(prefix + "index") == [b"member"]


@pytest.mark.redis
async def test_an_index_is_a_small_hash(redis_url: str, raw: Redis) -> None:
    # A one-member hash is a listpack (~170 bytes) where a set of strings is a hashtable (~280 bytes) before Redis 7.2:
    # every session has two indexes (Redis memory per session).
    prefix = f"t{uuid4().hex}:"
    store = RedisStore.from_url(redis_url, prefix=prefix)
    try:
        await store.index_add("index", "s:" + "x" * 43, 60)
        assert await raw.type(prefix + "index") == b"hash"
        assert await raw.object("encoding", prefix + "index") == b"listpack"
    finally:
        await store.aclose()


@pytest.mark.redis
async def test_an_index_written_as_a_set_is_still_read_and_updated(redis_url: str, raw: Redis) -> None:
    # Indexes were sets in earlier releases; those live on until their sessions' absolute timeout.
    prefix = f"t{uuid4().hex}:"
    await raw.sadd(prefix + "index", "a", "b")
    await raw.pexpire(prefix + "index", 60_000)
    store = RedisStore.from_url(redis_url, prefix=prefix)
    try:
        await store.index_add("index", "c", 60)
        assert sorted(await store.index_members("index")) == ["a", "b", "c"]
        for member in ("a", "b", "c"):
            await store.index_remove("index", member)
        assert await store.index_members("index") == []
        assert not await raw.exists(prefix + "index")  # gone with its last member, as a hash would be
    finally:
        await store.aclose()


@pytest.mark.redis
async def test_index_add_gives_a_set_without_ttl_one(redis_url: str, raw: Redis) -> None:
    # A set left without TTL (by an older version, or by hand) must not stay forever: PEXPIRE GT would skip it.
    prefix = f"t{uuid4().hex}:"
    await raw.sadd(prefix + "index", "old")
    store = RedisStore.from_url(redis_url, prefix=prefix)
    try:
        await store.index_add("index", "new", 30)
        assert 29 < (await store.ttl("index") or 0) <= 30
        assert sorted(await store.index_members("index")) == ["new", "old"]
    finally:
        await store.aclose()


@pytest.mark.redis
async def test_ttl_of_a_key_without_expiry_is_infinite(redis_url: str, raw: Redis) -> None:
    prefix = f"t{uuid4().hex}:"
    await raw.set(prefix + "k", b"v", ex=60)
    await raw.persist(prefix + "k")
    store = RedisStore.from_url(redis_url, prefix=prefix)
    try:
        assert await store.ttl("k") == float("inf")
    finally:
        await raw.delete(prefix + "k")
        await store.aclose()


@pytest.mark.redis
async def test_ttls_become_whole_milliseconds_at_least_one(redis_url: str, raw: Redis) -> None:
    prefix = f"t{uuid4().hex}:"
    store = RedisStore.from_url(redis_url, prefix=prefix)
    try:
        await store.set("k", b"v", 1.2344)
        assert 1_100 < await raw.pttl(prefix + "k") <= 1_234
    finally:
        await store.aclose()


@pytest.mark.redis
async def test_a_client_that_decodes_responses_is_refused(redis_url: str) -> None:
    store = RedisStore(Redis.from_url(redis_url, decode_responses=True), prefix=f"t{uuid4().hex}:")
    try:
        await store.set("k", b"v", 60)
        with pytest.raises(TypeError, match="decode_responses"):
            await store.get("k")
    finally:
        await store.aclose()


def test_module_sends_no_keys_or_scan() -> None:
    modules = (bff.session.redis_store, bff.session.redis_scripts, bff.session.redis_urls)
    source = "\n".join(Path(module.__file__ or "").read_text() for module in modules)
    # The commands as redis-py methods (client.keys(), scan_iter()...) or as strings ('KEYS' in Lua or
    # execute_command). Lua's KEYS[1] (the script's key arguments) and the word "keys" in prose are not commands.
    command = r"""\.(keys|scan\w*)\(|['"](keys|scan)['"\s]"""
    assert not re.search(command, source, re.IGNORECASE)
    assert re.search(command, "redis.call('KEYS', '*')", re.IGNORECASE)  # the pattern does catch one


@pytest.mark.redis
async def test_commands_sent_are_single_key_and_never_keys_or_scan(redis_process: RedisProcess) -> None:
    store = RedisStore.from_url(redis_process.url)
    try:
        for call in every_call(store):
            await call()
        token = await store.lock("l2", 10)
        assert token
        assert await store.extend_lock("l2", token, 10)
        assert await store.unlock("l2", token)
    finally:
        await store.aclose()
    raw = Redis.from_url(redis_process.url)
    try:
        stats = await raw.info("commandstats")
    finally:
        await raw.aclose()
    used = {name.removeprefix("cmdstat_") for name in stats}
    # Commands run inside scripts are counted too, so this also covers the Lua.
    allowed = {"get", "getex", "set", "getdel", "pexpire", "pttl", "del", "type", "hset", "hdel", "hkeys", "evalsha"}
    allowed |= {"ping", "script|load", "client|setinfo", "hello", "info"}  # scripts, the handshake, this INFO
    assert used <= allowed, used - allowed
    assert {"get", "getex", "set", "getdel", "evalsha", "hkeys"} <= used  # the stats really saw the store's calls


def test_a_missing_redis_server_fails_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from tests.support import redis_server

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match=r"apt-get install -y redis-server"):
        redis_server.require_redis_server()


# -- writes confirmed by replicas (store_replicas) ----------------------------------------------------------------


@pytest.fixture
def primary_and_replica() -> Iterator[tuple[RedisProcess, RedisProcess]]:
    """A primary and its replica, in sync (no Sentinel: the replica is only there to confirm writes)."""
    binary = require_redis_server()
    sync = ["--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]
    with contextlib.ExitStack() as stack:
        primary = stack.enter_context(RedisProcess(binary, args=sync))
        replica = stack.enter_context(RedisProcess(binary, args=[*sync, "--replicaof", "127.0.0.1", str(primary.port)]))
        # A write the replica acknowledged: it is in sync (its link being up is not enough: a replica that just
        # loaded the primary's snapshot may acknowledge its first write only with its next periodic ACK).
        replicate(primary.port, password=None, timeout_ms=10_000)
        yield primary, replica


async def test_with_store_replicas_a_write_counts_once_a_replica_holds_it(
    primary_and_replica: tuple[RedisProcess, RedisProcess],
) -> None:
    primary, replica = primary_and_replica
    # A generous timeout (WAIT gets half of it): a loaded machine's replica may take a while to acknowledge.
    store = RedisStore.from_url(primary.url, timeout=5, replicas=1)
    try:
        owner = await store.lock("l", 10)
        assert owner is not None
        await store.set("k", b"v", 10)
        assert await store.compare_and_set("k", b"v", b"w", 10)
        # WAIT returned: the replica holds the writes already, no polling needed.
        assert command(replica.port, "GET", "bff:k") == b"w"
        assert command(replica.port, "GET", "bff:l") == owner.encode()
    finally:
        await store.aclose()


async def test_with_store_replicas_a_write_no_replica_confirms_fails_and_a_lock_is_not_kept(
    primary_and_replica: tuple[RedisProcess, RedisProcess],
) -> None:
    """The replica is frozen (as one cut off by a failover): the writes land on the primary but are not confirmed,
    so they fail as an unavailable store; a lock taken so is released (its holder would refresh unprotected)."""
    primary, replica = primary_and_replica
    store = RedisStore.from_url(primary.url, timeout=0.5, replicas=1)
    replica.pause()
    try:
        with pytest.raises(SessionStoreUnavailable, match="replica"):
            await store.lock("l", 10)
        assert command(primary.port, "EXISTS", "bff:l") == b":0"
        for write in (
            lambda: store.set("k", b"v", 10),
            lambda: store.compare_and_set("k", b"v", b"w", 10),
            lambda: store.delete("k"),
        ):
            with pytest.raises(SessionStoreUnavailable, match="replica"):
                await write()
        # Reads do not wait for replicas.
        assert await store.get("nothing") is None
        assert await store.get_and_touch("nothing", 10) is None
    finally:
        replica.resume()
        await store.aclose()


def test_store_replicas_are_refused_on_a_cluster() -> None:
    with pytest.raises(ValueError, match="Cluster"):
        RedisStore.from_url("redis+cluster://127.0.0.1:7000", replicas=1)
