"""From a session store URL to the Redis clients of ``bff.session.redis_store``: standalone (``redis://``,
``rediss://`` for TLS, ``unix://``), Sentinel (``redis+sentinel://``) or Cluster (``redis+cluster://``).

``parse_store_url`` checks the URL and makes a password-free ``display`` for logs and errors; ``connect`` builds the
clients with the store's fail-fast settings (socket timeouts, a connection error retried once at once, a timeout
never: see ``bff.session.redis_store``), and, for a plain standalone Redis, the pipelined connection of the
per-request GETEX (``bff.session.redis_pipeline``). Nothing here does I/O: the clients connect on first use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import UnixDomainSocketConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from bff.session.redis_pipeline import DEFAULT_MAX_REPLY, Address, PipelinedConnection

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
    """Retry a connection error once, immediately; never a timeout (see ``bff.session.redis_store``)."""
    return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


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


@dataclass(frozen=True)
class RedisClients:
    """What ``connect`` built: all of it is the store's to close."""

    client: Redis | RedisCluster
    #: Names the server in error messages; never holds a password.
    display: str
    #: Sentinel only: the sentinel clients, closed with the store.
    sentinel: Sentinel | None = None
    #: Plain standalone Redis only: the connection of the per-request GETEX.
    pipeline: PipelinedConnection | None = None


def connect(url: str, *, timeout: float, max_reply: int = DEFAULT_MAX_REPLY) -> RedisClients:
    """Build the clients for ``url`` (see ``StoreURL`` for the forms), connecting lazily: no I/O here.

    Socket connect and read timeouts are ``timeout`` seconds. Raises ``ValueError`` for a URL it cannot use (see
    ``parse_store_url``).
    """
    target = parse_store_url(url)
    if target.kind == "standalone":
        client = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=_retry())
        return RedisClients(client, target.display, pipeline=pipelined_connection_for(url, timeout, max_reply))
    if target.kind == "cluster":
        cluster = RedisCluster(
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
        return RedisClients(cluster, target.display)
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
    return RedisClients(client, target.display, sentinel=sentinel)
