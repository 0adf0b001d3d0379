"""Redis high availability on loopback: a primary, its replica(s) and three sentinels (``SentinelGroup``), each a real
``redis-server`` process on a free port, with Sentinel timings short enough that a failover takes a few seconds.

Every server requires the password ``PASSWORD`` (the replicas authenticate to the primary with it, the sentinels
to all). ``SentinelGroup.kill_primary`` SIGKILLs the primary, ``switch_over`` asks for a failover while it runs;
``wait_for_failover`` returns once the sentinels name a replica as the new primary and it answers as one. Every
process is stopped on leaving the ``with`` block, also when starting the group failed half-way.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, cast
from urllib.parse import quote

import pytest
import redis

from tests.support.redis_server import PASSWORD, RedisProcess, cluster_node_port, require_redis_server

#: Sentinel timings (milliseconds): a primary that does not answer for ``DOWN_AFTER_MS`` is down; a failover that
#: does not complete in ``FAILOVER_TIMEOUT_MS`` is retried. Their sum plus an election bounds a failover.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 2000
#: How long the sentinels may take to find each other and the replica (hello messages every 2 s).
DISCOVERY_TIMEOUT = 20.0
#: The longest a failover may take here, from the kill to the sentinels naming the new primary: down-after, the
#: vote, and one retry of the failover should the first election split.
FAILOVER_BOUND = (DOWN_AFTER_MS + 2 * FAILOVER_TIMEOUT_MS) / 1000 + 5.0
SENTINELS = 3
QUORUM = 2


def _client(port: int, *, password: str | None = PASSWORD, timeout: float = 1.0) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1", port=port, password=password, socket_timeout=timeout, socket_connect_timeout=timeout
    )


def _call(port: int, *args: str | int, password: str | None = PASSWORD) -> Any:
    """One command to 127.0.0.1:``port``, its reply as redis-py parses it; a connection per call."""
    client = _client(port, password=password)
    try:
        return client.execute_command(*args)  # type: ignore[no-untyped-call]
    finally:
        client.close()


def replicate(
    primary_port: int, *, password: str | None = PASSWORD, timeout_ms: int = 5000, marker: str = "replicated"
) -> None:
    """Write a marker on the primary and ``WAIT`` for one replica to acknowledge it, on one connection: then the
    replica holds every write the primary took before (one ordered replication stream). Raises if none does."""
    client = _client(primary_port, password=password, timeout=timeout_ms / 1000 + 1)
    try:
        client.set(marker, "1")
        acknowledged = client.execute_command("WAIT", 1, timeout_ms)  # type: ignore[no-untyped-call]
    finally:
        client.close()
    if int(acknowledged) < 1:
        raise RuntimeError(f"the replica did not acknowledge the primary's writes within {timeout_ms} ms")


class FailingOver(Protocol):
    """What the failover test drives: a Sentinel group or a Cluster."""

    @property
    def url(self) -> str: ...
    def replicate(self) -> None: ...
    def kill_primary(self) -> None: ...
    def switch_over(self) -> None: ...
    def wait_for_failover(self) -> float: ...
    def rejoin(self) -> None: ...
    def wait_until_watched(self) -> None: ...


def _without_replicaof(args: list[str]) -> list[str]:
    if "--replicaof" not in args:
        return args
    at = args.index("--replicaof")
    return args[:at] + args[at + 3 :]


@dataclass
class SentinelGroup:
    """The servers, and which of them the sentinels name primary now (``primary``; the others are ``replicas``).
    A failover swaps them; a killed server leaves the group."""

    primary: RedisProcess
    replicas: list[RedisProcess]
    sentinels: list[RedisProcess]
    service_name: str
    killed: list[RedisProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The ``redis+sentinel://`` URL naming all three sentinels (the password is the Redis servers')."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://:{quote(PASSWORD, safe='')}@{hosts}/{self.service_name}"

    def _named_port(self, sentinel: RedisProcess) -> int | None:
        with contextlib.suppress(redis.RedisError, OSError):
            _, port = _call(sentinel.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service_name, password=None)
            return int(port)
        return None

    def replicate(self) -> None:
        """Return once a replica holds every write the primary acknowledged so far (see ``replicate``)."""
        replicate(self.primary.port)

    def kill_primary(self) -> None:
        """SIGKILL the primary; it leaves the group (``wait_for_failover`` names the new one) until ``restart``."""
        self.primary.kill()
        self.killed.append(self.primary)

    def rejoin(self) -> None:
        """Make every server a replica of the current primary again, as the sentinels do at their next 10 s INFO
        round: killed servers are started again on their ports, empty (nothing is persisted), as a Sentinel-aware
        start script does; a demoted primary that still believes it is one is told ``REPLICAOF``."""
        while self.killed:
            server = self.killed.pop()
            server.args = [*_without_replicaof(server.args), "--replicaof", "127.0.0.1", str(self.primary.port)]
            server.start()
            self.replicas.append(server)
        for server in self.replicas:
            if self._role(server.port) == "master":
                _call(server.port, "REPLICAOF", "127.0.0.1", self.primary.port)
        # Back only once every replica has synced: until then a write needing a replica's confirmation gets 503.
        deadline = time.monotonic() + FAILOVER_BOUND
        while self._online_replicas() < len(self.replicas):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the replicas did not sync with the new primary within {FAILOVER_BOUND:.0f}s")
            time.sleep(0.1)

    def _online_replicas(self) -> int:
        with contextlib.suppress(redis.RedisError, OSError):
            client = _client(self.primary.port)
            try:
                info = client.info("replication")
            finally:
                client.close()
            return sum(
                1
                for k, v in info.items()
                if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
            )
        return 0

    def switch_over(self) -> None:
        """Ask a sentinel for a failover while the primary runs (``SENTINEL FAILOVER``, as for maintenance): a
        replica is promoted, then the old primary is turned into its replica, taking writes until then. Retried
        while the sentinels do not know a replica good enough yet (just after the previous failover)."""
        deadline = time.monotonic() + FAILOVER_BOUND
        while True:
            try:
                _call(self.sentinels[0].port, "SENTINEL", "FAILOVER", self.service_name, password=None)
            except redis.ResponseError as exc:  # NOGOODSLAVE, INPROG
                if time.monotonic() > deadline:
                    raise RuntimeError(f"SENTINEL FAILOVER refused for {FAILOVER_BOUND:.0f}s: {exc}") from exc
            else:
                return
            time.sleep(0.1)

    def wait_for_failover(self) -> float:
        """Block until every sentinel names one of the replicas primary and it answers as one; returns
        ``time.monotonic()`` then, with ``primary`` and ``replicas`` updated. Raises after ``FAILOVER_BOUND``."""
        deadline = time.monotonic() + FAILOVER_BOUND
        while time.monotonic() < deadline:
            named = {self._named_port(s) for s in self.sentinels}
            promoted = [r for r in self.replicas if named == {r.port} and self._role(r.port) == "master"]
            if promoted:
                old = self.primary
                self.primary = promoted[0]
                self.replicas = [r for r in self.replicas if r is not self.primary]
                if old.running:
                    self.replicas.append(old)
                return time.monotonic()
            time.sleep(0.05)
        raise RuntimeError(f"no failover within {FAILOVER_BOUND:.0f}s")

    @staticmethod
    def _role(port: int) -> str:
        with contextlib.suppress(redis.RedisError, OSError):
            client = _client(port)
            try:
                return str(client.info("replication")["role"])
            finally:
                client.close()
        return ""

    def wait_until_watched(self) -> None:
        """Until every replica is in sync and every sentinel knows the replicas and the other sentinels (a
        failover needs a quorum of sentinels that know each other, and a replica they know of)."""
        deadline = time.monotonic() + DISCOVERY_TIMEOUT
        while time.monotonic() < deadline:
            if all(self._synced(r) for r in self.replicas) and all(self._sees_all(s) for s in self.sentinels):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the sentinels did not discover each other and the replicas in {DISCOVERY_TIMEOUT:.0f}s")

    def _synced(self, replica: RedisProcess) -> bool:
        with contextlib.suppress(redis.RedisError, OSError):
            client = _client(replica.port)
            try:
                info = client.info("replication")
            finally:
                client.close()
            return info.get("master_port") == self.primary.port and info.get("master_link_status") == "up"
        return False

    def _sees_all(self, sentinel: RedisProcess) -> bool:
        with contextlib.suppress(redis.RedisError, OSError):
            client = _client(sentinel.port, password=None)
            try:
                master = cast(dict[str, Any], client.sentinel_master(self.service_name))
            finally:
                client.close()
            return (
                int(master["port"]) == self.primary.port
                and int(master["num-slaves"]) >= len(self.replicas)
                and int(master["num-other-sentinels"]) >= SENTINELS - 1
            )
        return False


@contextlib.contextmanager
def sentinel_group(service_name: str = "bff", replicas: int = 1) -> Iterator[SentinelGroup]:
    """Start a primary, ``replicas`` replicas and three sentinels (quorum two) on loopback; stop all of them on
    leaving."""
    binary = require_redis_server()
    auth = ["--requirepass", PASSWORD, "--masterauth", PASSWORD]
    # Diskless sync without delay: a replica is in sync as soon as it connects (the default waits 5 s).
    sync = ["--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]
    with contextlib.ExitStack() as stack:
        primary = stack.enter_context(RedisProcess(binary, args=[*auth, *sync]))
        followers = [
            stack.enter_context(
                RedisProcess(binary, args=[*auth, *sync, "--replicaof", "127.0.0.1", str(primary.port)])
            )
            for _ in range(replicas)
        ]
        config = (
            f"sentinel monitor {service_name} 127.0.0.1 {primary.port} {QUORUM}\n"
            f'sentinel auth-pass {service_name} "{PASSWORD}"\n'
            f"sentinel down-after-milliseconds {service_name} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {service_name} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {service_name} {replicas}\n"
        )
        sentinels = [
            stack.enter_context(RedisProcess(binary, config=config, args=["--sentinel"])) for _ in range(SENTINELS)
        ]
        group = SentinelGroup(primary, followers, sentinels, service_name)
        group.wait_until_watched()
        yield group


#: Cluster timing (milliseconds): a primary unreachable this long is failing, and its replica takes over.
CLUSTER_NODE_TIMEOUT_MS = 1000
CLUSTER_SHARDS = 3


@dataclass
class ClusterGroup:
    """A Redis Cluster of ``CLUSTER_SHARDS`` primaries with a replica each; ``shard`` is the one failed over."""

    primaries: list[RedisProcess]
    replicas: list[RedisProcess]
    killed: list[RedisProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p.port}" for p in self.primaries)
        return f"redis+cluster://:{quote(PASSWORD, safe='')}@{hosts}"

    def replicate(self) -> None:
        """Every shard's replica holds its primary's writes: a marker key of a slot each primary owns, then WAIT."""
        for primary in self.primaries:
            for n in range(1000):
                try:
                    replicate(primary.port, marker=f"replicated-{n}")
                    break
                except redis.exceptions.MovedError:  # the marker's slot is another shard's: try the next name
                    continue

    def kill_primary(self) -> None:
        """SIGKILL the first shard's primary: with the others voting, its replica takes over after the node timeout."""
        self.primaries[0].kill()
        self.killed.append(self.primaries[0])

    def switch_over(self) -> None:
        """``CLUSTER FAILOVER`` on the first shard's replica: a coordinated switch-over (the primary stops taking
        writes until the replica has caught up), as for maintenance."""
        _call(self.replicas[0].port, "CLUSTER", "FAILOVER")

    def wait_for_failover(self) -> float:
        """Until the first shard's replica is a primary and every live node says ``cluster_state:ok``; then the two
        swap places (a killed primary leaves the group)."""
        deadline = time.monotonic() + FAILOVER_BOUND
        while time.monotonic() < deadline:
            if SentinelGroup._role(self.replicas[0].port) == "master" and self._all_ok():
                old, self.primaries[0] = self.primaries[0], self.replicas[0]
                self.replicas[0] = old
                return time.monotonic()
            time.sleep(0.05)
        raise RuntimeError(f"no shard failover within {FAILOVER_BOUND:.0f}s")

    def _all_ok(self) -> bool:
        live = [n for n in (*self.primaries, *self.replicas) if n.running]
        with contextlib.suppress(redis.RedisError, OSError):
            return all(b"cluster_state:ok" in _call(n.port, "CLUSTER", "INFO") for n in live)
        return False

    def rejoin(self) -> None:
        """A killed node stays out: the test's store writes wait for no replica (``store_replicas`` is refused on
        a Cluster), and a node restarted empty would have to be introduced to the cluster again."""

    def wait_until_watched(self) -> None:
        deadline = time.monotonic() + DISCOVERY_TIMEOUT
        while time.monotonic() < deadline:
            synced = all(
                self._link_up(r) for r, p in zip(self.replicas, self.primaries, strict=True) if r.running and p.running
            )
            if synced and self._all_ok():
                return
            time.sleep(0.1)
        raise RuntimeError(f"the cluster did not settle in {DISCOVERY_TIMEOUT:.0f}s")

    @staticmethod
    def _link_up(replica: RedisProcess) -> bool:
        with contextlib.suppress(redis.RedisError, OSError):
            client = _client(replica.port)
            try:
                return client.info("replication").get("master_link_status") == "up"
            finally:
                client.close()
        return False


@contextlib.contextmanager
def cluster_group() -> Iterator[ClusterGroup]:
    """``CLUSTER_SHARDS`` primaries with a replica each, as real ``redis-server`` processes on loopback, joined and
    given their slots by ``redis-cli --cluster create``; all stopped on leaving."""
    binary = require_redis_server()
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.fail("redis-cli not found (Debian: it comes with redis-server, in redis-tools)", pytrace=False)
    args = [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        str(CLUSTER_NODE_TIMEOUT_MS),
        "--requirepass",
        PASSWORD,
        "--masterauth",
        PASSWORD,
        "--repl-diskless-sync",
        "yes",
        "--repl-diskless-sync-delay",
        "0",
    ]
    with contextlib.ExitStack() as stack:
        nodes = [
            stack.enter_context(RedisProcess(binary, cluster_node_port(), args=args)) for _ in range(2 * CLUSTER_SHARDS)
        ]
        created = subprocess.run(
            [cli, "-a", PASSWORD, "--no-auth-warning", "--cluster", "create"]
            + [f"127.0.0.1:{n.port}" for n in nodes]
            + ["--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-1500:]!r}")
        by_port = {n.port: n for n in nodes}
        primaries: list[RedisProcess] = []
        replicas: list[RedisProcess] = []
        deadline = time.monotonic() + DISCOVERY_TIMEOUT
        while not primaries:
            pairs = _shards(nodes[0].port)
            if len(pairs) == CLUSTER_SHARDS:
                primaries = [by_port[p] for p, _ in pairs]
                replicas = [by_port[r] for _, r in pairs]
            elif time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not pair its replicas: {pairs}")
            else:
                time.sleep(0.1)
        group = ClusterGroup(primaries, replicas)
        group.wait_until_watched()
        yield group


def _shards(port: int) -> list[tuple[int, int]]:
    """(primary port, replica port) of each shard with a replica, from ``CLUSTER NODES`` on ``port``."""
    nodes = _call(port, "CLUSTER", "NODES")
    text = nodes.decode() if isinstance(nodes, bytes) else str(nodes)
    ids: dict[str, int] = {}
    parents: dict[int, str] = {}
    for line in text.splitlines():
        fields = line.split()
        node_port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
        ids[fields[0]] = node_port
        if "slave" in fields[2]:
            parents[node_port] = fields[3]
    return [(ids[parent], replica) for replica, parent in parents.items() if parent in ids]
