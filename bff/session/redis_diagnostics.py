"""What ``bff doctor`` needs to know about the Redis behind a session store URL: version, role and replicas,
persistence, the eviction policy, and the round-trip time of PING.

The clients are the store's own (``bff.session.redis_urls.connect``: the same URL forms, TLS and credentials), so
the doctor reaches Redis exactly as ``bff serve`` does. Every command is bounded by ``command_timeout``. Connection
failures are :class:`~bff.errors.SessionStoreUnavailable` (never with the password: messages use the URL's
``display`` form). ``CONFIG`` is often disabled on managed Redis: its absence is reported, not raised.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError, ResponseError

from bff.errors import SessionStoreUnavailable
from bff.session.redis_urls import Kind, connect, parse_store_url


@dataclass(frozen=True)
class RedisDiagnostics:
    display: str
    kind: Kind
    version: str
    #: INFO replication ``role``: ``master`` or ``slave``.
    role: str
    connected_replicas: int
    aof_enabled: bool
    #: ``CONFIG GET save`` (RDB snapshot points; empty: none); None when CONFIG is not available.
    rdb_save: str | None
    #: INFO memory; 0 means no limit.
    maxmemory: int
    maxmemory_policy: str
    #: Seconds per PING round trip.
    latencies: tuple[float, ...]


async def diagnose_redis(
    url: str, *, command_timeout: float, pings: int = 5, timer: Callable[[], float] = time.perf_counter
) -> RedisDiagnostics:
    """Read the diagnostics of the Redis at ``url`` (for a Cluster: the node it reaches first)."""
    target = parse_store_url(url)
    clients = connect(url, timeout=command_timeout)
    try:
        return await asyncio.wait_for(
            _read(clients.client, target.kind, clients.display, pings, timer), command_timeout * 4
        )
    except (RedisError, OSError, TimeoutError) as exc:
        raise SessionStoreUnavailable(f"Redis at {clients.display}: {type(exc).__name__}") from exc
    finally:
        try:
            await clients.client.aclose()
            if clients.pipeline is not None:  # never used here; closed all the same
                await clients.pipeline.aclose()
        finally:
            if clients.sentinel is not None:
                await clients.sentinel.aclose()


async def _read(
    client: Redis | RedisCluster, kind: Kind, display: str, pings: int, timer: Callable[[], float]
) -> RedisDiagnostics:
    await client.ping()  # connects (and, for a Cluster, reads the slot map): not part of a round trip
    latencies = []
    for _ in range(pings):
        start = timer()
        await client.ping()
        latencies.append(timer() - start)
    info = _one_node(await client.info())
    try:
        reply: Mapping[Any, Any] = await client.config_get("save")
        save: str | None = str(_one_node(reply).get("save", ""))
    except ResponseError:  # CONFIG renamed or disabled
        save = None
    return RedisDiagnostics(
        display=display,
        kind=kind,
        version=str(info.get("redis_version", "")),
        role=str(info.get("role", "")),
        connected_replicas=int(info.get("connected_slaves", 0)),
        aof_enabled=str(info.get("aof_enabled", "0")) == "1",
        rdb_save=save,
        maxmemory=int(info.get("maxmemory", 0)),
        maxmemory_policy=str(info.get("maxmemory_policy", "")),
        latencies=tuple(latencies),
    )


def _one_node(reply: Mapping[Any, Any]) -> Mapping[Any, Any]:
    """A Cluster answers per node (``{"host:port": {...}}``): the first node's answer; standalone as it is."""
    first = next(iter(reply.values()), None) if reply else None
    if isinstance(first, Mapping) and all(isinstance(v, Mapping) for v in reply.values()):
        return first
    return reply
