"""The session store's Redis as bff will use it: reachable, new enough, persistent, never evicting sessions,
writable (a primary), with the replicas ``[session] store_replicas`` waits for, and fast enough for
``[session] store_timeout``."""

from __future__ import annotations

from statistics import median

from bff.config import Config
from bff.doctor.report import Check, failed, passed, skipped, warned
from bff.errors import SessionStoreUnavailable
from bff.session.redis_diagnostics import RedisDiagnostics, diagnose_redis
from bff.session.redis_urls import parse_store_url

IDS = (
    "redis.reachable",
    "redis.version",
    "redis.persistence",
    "redis.maxmemory_policy",
    "redis.replication",
    "redis.latency",
)
#: GETEX and GETDEL (bff.session.redis_store).
MINIMUM_VERSION = (6, 2)


async def check_redis(config: Config, call_timeout: float) -> list[Check]:
    store = config.session.store
    if store.startswith("memory:"):
        reason = "session store is memory:// (one process, sessions lost on restart): no Redis to check"
        return [skipped(i, reason) for i in IDS]
    try:
        display = parse_store_url(store).display
        found = await diagnose_redis(store, command_timeout=min(call_timeout, config.session.store_timeout * 2))
    except ValueError as exc:
        return [failed("redis.reachable", f"session.store: {exc}", "fix [session] store"), *_rest()]
    except SessionStoreUnavailable as exc:
        return [
            failed(
                "redis.reachable",
                f"{exc.message} (no answer within the timeout, refused, or authentication failed)",
                f"check that Redis at {display} runs, is reachable from bff, and the URL's credentials and TLS",
            ),
            *_rest(),
        ]
    return [
        passed("redis.reachable", f"Redis at {found.display} answers ({found.kind})"),
        _version(found),
        _persistence(found),
        _eviction(found),
        _replication(found, config.session.store_replicas),
        _latency(found, config.session.store_timeout),
    ]


def _rest() -> list[Check]:
    return [skipped(i, "Redis is not reachable") for i in IDS[1:]]


def _version(found: RedisDiagnostics) -> Check:
    try:
        version = tuple(int(part) for part in found.version.split(".")[:2])
    except ValueError:
        version = ()
    if len(version) < 2:
        return warned("redis.version", f"Redis reports version {found.version[:40]!r}", "use Redis >= 6.2")
    if version < MINIMUM_VERSION:
        return failed(
            "redis.version",
            f"Redis {found.version} lacks GETEX and GETDEL, which bff uses (Redis >= 6.2)",
            "upgrade Redis to 6.2 or later",
        )
    return passed("redis.version", f"Redis {found.version}")


def _persistence(found: RedisDiagnostics) -> Check:
    if found.aof_enabled:
        return passed("redis.persistence", "append-only file on: sessions survive a restart")
    if found.rdb_save:
        return passed("redis.persistence", f"RDB snapshots ({found.rdb_save}): sessions survive a restart")
    fix = "turn on appendonly yes (or RDB snapshots) unless losing every session on a Redis restart is accepted"
    if found.rdb_save is None:
        return warned("redis.persistence", "no append-only file, and CONFIG GET save is not allowed", fix)
    return warned("redis.persistence", "no persistence: a Redis restart logs every user out", fix)


def _eviction(found: RedisDiagnostics) -> Check:
    policy = found.maxmemory_policy
    fix = "set maxmemory-policy noeviction (bff answers 503 when Redis is full, and nobody is logged out)"
    if policy.startswith("allkeys-"):
        return failed(
            "redis.maxmemory_policy",
            f"maxmemory-policy {policy} lets Redis evict any key when full: sessions, locks and refresh results",
            fix,
        )
    if found.maxmemory == 0:
        return passed("redis.maxmemory_policy", f"no maxmemory limit (policy {policy}): nothing is evicted")
    if policy.startswith("volatile-"):
        return warned(
            "redis.maxmemory_policy",
            f"maxmemory-policy {policy} with maxmemory {found.maxmemory}: sessions (keys with TTLs) are evicted"
            " when Redis is full",
            fix,
        )
    return passed("redis.maxmemory_policy", f"maxmemory-policy {policy}: sessions are never evicted")


def _replication(found: RedisDiagnostics, wanted: int) -> Check:
    if found.role == "slave":
        return failed(
            "redis.replication",
            "the store URL reaches a read-only replica: every write fails",
            "point [session] store at the primary (or use redis+sentinel:// to follow it)",
        )
    if found.kind == "cluster":
        return passed("redis.replication", "Redis Cluster: replicas are per shard")
    if found.connected_replicas < wanted:
        return failed(
            "redis.replication",
            f"[session] store_replicas = {wanted}, but the primary has {found.connected_replicas} connected"
            " replica(s): every write waits for replicas that are not there",
            "attach the replicas, or lower [session] store_replicas",
        )
    return passed(
        "redis.replication", f"primary with {found.connected_replicas} connected replica(s) (store_replicas {wanted})"
    )


def _latency(found: RedisDiagnostics, store_timeout: float) -> Check:
    typical = median(found.latencies)
    said = f"PING round trip {typical * 1000:.1f} ms (median of {len(found.latencies)})"
    fix = "move Redis closer to bff (same zone), or raise [session] store_timeout"
    if typical > store_timeout / 2:
        return failed("redis.latency", f"{said}: near [session] store_timeout ({store_timeout:g} s)", fix)
    if typical > store_timeout / 20:
        return warned("redis.latency", f"{said}: every request waits for it", fix)
    return passed("redis.latency", said)
