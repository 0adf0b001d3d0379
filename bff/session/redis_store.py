"""The session store on Redis: standalone, Sentinel or Cluster, through ``redis.asyncio``.

The only module that imports ``redis``. Every method is one single-key command or one Lua script that touches
exactly one key, so each is atomic and runs unchanged on Redis Cluster (a script's keys must hash to one slot). No
KEYS or SCAN: nothing here is O(number of keys). The per-request ``get_and_touch`` on a plain standalone Redis goes
over a leaner pipelined connection of bff's own (``bff.session.redis_pipeline``, issue 6); the rest, and Sentinel,
Cluster and TLS, through redis-py.

Failing fast is the point: sockets time out after ``timeout`` seconds and a timeout is never retried, so a dead
Redis costs a request about one timeout and the app answers 503 (``SessionStoreUnavailable``) instead of hanging.
A *connection* error is retried once, at once: after Redis restarts, every pooled connection is dead, and redis-py
8 no longer notices that before using one (it skips the pool's dirty-connection check while its maintenance
notifications are enabled, which is the default), so without the retry each of them would cost a request a 503.
A refused connection fails in microseconds, so the retry keeps the bound. The client reconnects on the next call,
so a Redis that comes back is used again without restarting bff (``tests/session/test_redis_store.py``).

Requires Redis >= 6.2 (GETDEL, GETEX).
"""

from __future__ import annotations

import contextlib
import math
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, cast
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import UnixDomainSocketConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from bff.errors import SessionStoreUnavailable
from bff.session.redis_pipeline import DEFAULT_MAX_REPLY, Address, PipelinedConnection, ReplyError

# Each script touches only KEYS[1]; compares are byte for byte (Lua strings are binary-safe).

# KEYS[1]: the key. ARGV[1]: the expected value. ARGV[2]: the new value. ARGV[3]: the TTL in ms; "0" deletes the key
# instead (a TTL <= 0 never stores). Returns 1 when the current value equalled ARGV[1] and was replaced (or
# deleted); 0 when the key is absent or holds something else, and then nothing changes.
_COMPARE_AND_SET = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[3]) > 0 then
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
else
    redis.call('DEL', KEYS[1])
end
return 1
"""

# KEYS[1]: the lock. ARGV[1]: the owner token. ARGV[2]: the new lease in ms; "0" releases the lock instead.
# Returns 1 when ARGV[1] owns the lock (lease renewed or lock released); 0 when the lock is absent or owned by
# another token, and then nothing changes.
_EXTEND_LOCK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
    redis.call('DEL', KEYS[1])
end
return 1
"""

# KEYS[1]: the lock. ARGV[1]: the owner token. Returns 1 when ARGV[1] owned the lock and it was deleted, 0 when the
# lock is absent or owned by another token. The release from https://redis.io/docs/latest/develop/use/patterns/
# distributed-locks/ ("Correct Implementation with a Single Instance"): never delete another owner's lock.
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Indexes are hashes whose fields are the members (values empty), not sets: Redis keeps a small hash as a listpack
# (~170 bytes for one member), while a set of strings is a hashtable (~280 bytes) before Redis 7.2, and every
# session has two indexes (issue 6: Redis memory per session). Sets written by earlier versions are still read and
# updated as sets (TYPE picks the command) until they expire with the sessions they list.

# KEYS[1]: the index. ARGV[1]: the member. ARGV[2]: the TTL in ms (> 0). Adds ARGV[1] and makes the index live at
# least ARGV[2] ms more: its TTL only grows. Not PEXPIRE GT, because GT treats a key without a TTL as infinite and
# would leave it immortal (https://redis.io/docs/latest/commands/pexpire/#options); PTTL answers -1 for it, which is
# below any ARGV[2], so it gets one here. Returns 1 when the TTL was raised, 0 otherwise.
_INDEX_ADD = """
if redis.call('TYPE', KEYS[1]).ok == 'set' then
    redis.call('SADD', KEYS[1], ARGV[1])
else
    redis.call('HSET', KEYS[1], ARGV[1], '')
end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
return 0
"""

# KEYS[1]: the index. ARGV[1]: the member. Removes it; Redis deletes the index with its last member. Returns the
# number of members removed (0 when the member or the index is absent).
_INDEX_REMOVE = """
if redis.call('TYPE', KEYS[1]).ok == 'set' then return redis.call('SREM', KEYS[1], ARGV[1]) end
return redis.call('HDEL', KEYS[1], ARGV[1])
"""

# KEYS[1]: the index. Returns its members, an empty array when it does not exist.
_INDEX_MEMBERS = """
if redis.call('TYPE', KEYS[1]).ok == 'set' then return redis.call('SMEMBERS', KEYS[1]) end
return redis.call('HKEYS', KEYS[1])
"""

Kind = Literal["standalone", "sentinel", "cluster"]

_SCHEMES: dict[str, tuple[Kind, bool]] = {
    "redis": ("standalone", False),
    "rediss": ("standalone", True),
    "unix": ("standalone", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}


@dataclass(frozen=True)
class StoreURL:
    """A parsed session store URL. ``display`` is the URL without password or query: safe for logs and errors.

    ``redis://``, ``rediss://`` and ``unix://`` are handed to redis-py as they are (``url``);
    ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service_name[/db]`` and
    ``redis+cluster://[[user]:password@]host[:port][,host[:port]...]`` are parsed into ``nodes`` and the rest.
    The ``rediss+`` variants use TLS. The password authenticates to the Redis servers, not to the sentinels.
    """

    kind: Kind
    display: str
    url: str = field(repr=False)
    ssl: bool = False
    nodes: tuple[tuple[str, int], ...] = ()
    service_name: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_store_url(url: str) -> StoreURL:
    """Parse a session store URL. Raises ``ValueError`` with a message that never contains the password."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ValueError(f"unsupported session store URL scheme {scheme!r}: use one of {', '.join(_SCHEMES)}")
    kind, ssl = _SCHEMES[scheme]
    if "@" in parts.path + parts.query + parts.fragment:
        # A password with an unescaped "/", "?" or "#" spills into the path: refuse before echoing any of it.
        raise ValueError("percent-encode '/', '?', '#' and '@' in the session store URL's user name and password")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    display = f"{scheme}://{user + '@' if user else ''}{hosts}{parts.path}"  # no password, no query
    if kind == "standalone":
        return StoreURL(kind, display, url, ssl)
    if parts.query or parts.fragment:
        raise ValueError(f"{scheme}:// URLs take no query string or fragment")
    username, colon, password = userinfo.partition(":")
    default_port = 26379 if kind == "sentinel" else 6379
    nodes = tuple(_parse_node(item, default_port) for item in hosts.split(","))
    segments = parts.path.strip("/").split("/") if parts.path.strip("/") else []
    service_name, db = "", 0
    if kind == "sentinel":
        if not 1 <= len(segments) <= 2 or not segments[0]:
            raise ValueError(f"{scheme}:// URLs need the service name as path: /service_name[/db]")
        service_name = unquote(segments[0])
        db = _parse_db(segments[1]) if len(segments) == 2 else 0
    elif segments not in ([], ["0"]):  # Cluster has only database 0
        raise ValueError(f"{scheme}:// URLs take no path (Redis Cluster has only database 0)")
    return StoreURL(
        kind,
        display,
        url,
        ssl,
        nodes,
        service_name,
        db,
        username=unquote(username) or None,
        password=unquote(password) if colon else None,
    )


def _parse_node(item: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(f"//{item.strip()}")
    try:
        port = parts.port or default_port
    except ValueError:
        raise ValueError(f"invalid port in session store host {item.strip()!r}") from None
    if not parts.hostname or parts.path or "@" in item:
        raise ValueError(f"invalid session store host {item.strip()!r}: expected host[:port] or [ipv6][:port]")
    return parts.hostname, port


def _parse_db(segment: str) -> int:
    if not segment.isdigit():
        raise ValueError(f"invalid Redis database number {segment!r}")
    return int(segment)


def _retry() -> Retry:
    """Retry a connection error once, immediately; never a timeout (see the module docstring)."""
    return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


def _ms(ttl: float) -> int:
    """Seconds to whole milliseconds, at least 1; 0 for a TTL <= 0 (which deletes/never stores)."""
    return 0 if ttl <= 0 else max(1, round(ttl * 1000))


def pipelined_connection_for(
    url: str, timeout: float, max_reply: int = DEFAULT_MAX_REPLY
) -> PipelinedConnection | None:
    """The pipelined connection for the per-request GETEX (``bff.session.redis_pipeline``), when the URL asks for
    nothing it lacks: ``redis://`` or ``unix://`` with at most credentials and a database. TLS and the URL's query
    options stay with redis-py, which also reads the URL here, so that both connections reach the same place.
    ``max_reply`` bounds one reply (a session record) in bytes."""
    options = dict(parse_url(url))
    connection_class = options.pop("connection_class", None)
    if connection_class not in (None, UnixDomainSocketConnection):  # rediss://
        return None
    if set(options) - {"host", "port", "path", "db", "username", "password"}:
        return None
    address = Address(
        host=str(options.get("host", "localhost")),
        port=int(options.get("port", 6379)),  # type: ignore[call-overload]
        path=str(options["path"]) if "path" in options else None,
        db=int(options.get("db", 0)),  # type: ignore[call-overload]
        username=str(options["username"]) if options.get("username") else None,
        password=str(options["password"]) if options.get("password") is not None else None,
    )
    return PipelinedConnection(address, timeout=timeout, max_reply=max_reply)


class RedisStore:
    """A ``SessionStore`` on Redis. Keys are ``prefix + key``, so several apps can share one database.

    Takes ownership of ``client`` (a ``redis.asyncio`` client created with ``decode_responses=False``) and closes
    it in ``aclose``. Build it with ``from_url`` to get the fail-fast timeouts.
    """

    def __init__(self, client: Redis | RedisCluster, prefix: str = "bff:", *, display: str = "redis") -> None:
        self._client = client
        self._prefix = prefix
        self._display = display  # names the server in error messages; never holds a password
        self._sentinel: Sentinel | None = None  # set by from_url: the sentinel clients are ours to close too
        # Set by from_url for a plain standalone Redis: the connection of the per-request GETEX.
        self._pipeline: PipelinedConnection | None = None
        self._closed = False
        # register_script computes the SHA1 only; EVALSHA loads the script on first use (and on NOSCRIPT after a
        # restart or failover), on whichever node owns the key.
        self._compare_and_set = client.register_script(_COMPARE_AND_SET)
        self._extend_lock = client.register_script(_EXTEND_LOCK)
        self._unlock = client.register_script(_UNLOCK)
        self._index_add = client.register_script(_INDEX_ADD)
        self._index_remove = client.register_script(_INDEX_REMOVE)
        self._index_members = client.register_script(_INDEX_MEMBERS)

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "bff:", timeout: float = 2.0, max_reply: int = DEFAULT_MAX_REPLY
    ) -> RedisStore:
        """Connect lazily (no I/O here) to the Redis named by ``url`` (see ``StoreURL`` for the forms).

        Socket connect and read timeouts are ``timeout`` seconds and a timeout is not retried (a connection error
        is, once, at once; see the module docstring): the caller answers 503 rather than holding the request while
        Redis is away. ``max_reply`` bounds one reply of the per-request GETEX in bytes (the pipelined connection;
        redis-py's own replies are not bounded here). Raises ``ValueError`` for a URL it cannot use (see
        ``parse_store_url``).
        """
        target = parse_store_url(url)
        client: Redis | RedisCluster
        sentinel = None
        pipeline = None
        if target.kind == "standalone":
            client = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=_retry())
            pipeline = pipelined_connection_for(url, timeout, max_reply)
        elif target.kind == "cluster":
            client = RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
                username=target.username,
                password=target.password,
                ssl=target.ssl,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                # One retry, after re-reading the slot map: the first command after a failover hits the dead
                # primary, and the retry reaches the promoted replica (redis-py marks the topology stale on the
                # connection error). Cluster retries timeouts too (its own error list), so the bound is 2 x timeout.
                retry=Retry(NoBackoff(), 1),
            )
        else:
            sentinel_options = {
                "socket_timeout": timeout,
                "socket_connect_timeout": timeout,
                "retry": _retry(),
                "ssl": target.ssl,
            }
            # redis-py < 8.2 leaves Sentinel.__init__ unannotated.
            sentinel = Sentinel(target.nodes, sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call, unused-ignore]
            client = sentinel.master_for(
                target.service_name,
                db=target.db,
                username=target.username,
                password=target.password,
                ssl=target.ssl,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=_retry(),
            )
        store = cls(client, prefix, display=target.display)
        store._sentinel = sentinel
        store._pipeline = pipeline
        return store

    def __repr__(self) -> str:
        return f"RedisStore({self._display!r}, prefix={self._prefix!r})"

    async def get(self, key: str) -> bytes | None:
        with self._errors("GET"):
            return _bytes(await self._client.get(self._prefix + key))

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        with self._errors("SET"):
            ms = _ms(ttl)
            if ms:
                await self._client.set(self._prefix + key, value, px=ms)
            else:
                await self._client.delete(self._prefix + key)

    async def set_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        with self._errors("SET NX"):
            ms = _ms(ttl)
            return bool(ms) and bool(await self._client.set(self._prefix + key, value, nx=True, px=ms))

    async def compare_and_set(self, key: str, expected: bytes, value: bytes, ttl: float) -> bool:
        with self._errors("compare_and_set"):
            return int(await self._compare_and_set(keys=[self._prefix + key], args=[expected, value, _ms(ttl)])) == 1

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
            # Every proxied request comes here: the pipelined connection, and no context manager (issue 6).
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
        with self._errors("GETDEL"):
            return _bytes(await self._client.getdel(self._prefix + key))

    async def delete(self, key: str) -> bool:
        with self._errors("DEL"):
            return await self._client.delete(self._prefix + key) > 0

    async def index_add(self, index: str, member: str, ttl: float) -> None:
        with self._errors("index_add"):
            ms = _ms(ttl)
            if ms:
                await self._index_add(keys=[self._prefix + index], args=[member, ms])

    async def index_remove(self, index: str, member: str) -> None:
        with self._errors("index_remove"):
            await self._index_remove(keys=[self._prefix + index], args=[member])

    async def index_members(self, index: str) -> list[str]:
        with self._errors("index_members"):
            members = await self._index_members(keys=[self._prefix + index])
        return [m.decode() if isinstance(m, bytes) else m for m in members]

    async def lock(self, key: str, ttl: float) -> str | None:
        token = secrets.token_urlsafe(16)
        with self._errors("SET NX"):
            ms = _ms(ttl)
            taken = bool(ms) and bool(await self._client.set(self._prefix + key, token, nx=True, px=ms))
        return token if taken else None

    async def extend_lock(self, key: str, token: str, ttl: float) -> bool:
        with self._errors("extend_lock"):
            return int(await self._extend_lock(keys=[self._prefix + key], args=[token, _ms(ttl)])) == 1

    async def unlock(self, key: str, token: str) -> bool:
        with self._errors("unlock"):
            return int(await self._unlock(keys=[self._prefix + key], args=[token])) == 1

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


#: What the clients raise when the store fails. RedisClusterException is not a RedisError (e.g. SlotNotCoveredError
#: while the cluster is partly down); TimeoutError is asyncio.TimeoutError since Python 3.11 (an OSError too; named
#: for the reader).
_FAILURES = (TimeoutError, RedisError, RedisClusterException, OSError, ReplyError)


def _bytes(value: bytes | str | None) -> bytes | None:
    if isinstance(value, str):
        raise TypeError("RedisStore needs a client created with decode_responses=False")
    return value
