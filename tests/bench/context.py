"""What every part of the benchmark shares: the mode (how long, how many), the run's context (the CPU plan, the
tools, Redis, the upstream, the IdP, the bffs' ports), a logged-in bff of any tree, and wrk runs against it."""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.bench.idp import IdP
from tests.bench.parts import PARTS
from tests.bench.peers import compare as peers
from tests.bench.servers import API_PATH, Bff, start_bff
from tests.bench.system import CpuPlan
from tests.bench.wrk import Load, WrkResult, run_wrk, run_wrk_at_once
from tests.support.configs import write_config

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Mode:
    smoke: bool
    duration: float
    warmup: float
    connections: int
    storm: int
    sessions: int
    idp_delay: float = 0.1
    #: Rounds of each paired measurement that carries a target (the telemetry target row, the realistic rows, the
    #: capped scaling, whose rounds count only where every cap bound) and of ``--compare-with``, ``duration`` each.
    budget_rounds: int = 5
    #: Rounds of the paired rows without a target whose figure held steady from round to round and run to run: the
    #: telemetry features alone and tracing.
    stable_rounds: int = 3
    #: Rounds of the peers' comparison (every contender alone once per round, ``peer_duration`` each).
    peer_rounds: int = peers.ROUNDS
    #: Connections held open for the worker-memory and many-connections rows.
    many_connections: int = 2000

    @property
    def name(self) -> str:
        return "smoke" if self.smoke else "full"

    @property
    def peer_duration(self) -> float:
        """A third of a row's duration, in whole seconds (wrk's): four contenders x five rounds take a minute."""
        return float(max(1, math.ceil(self.duration * 0.3)))


#: Redis memory: 25,000 sessions make 75,000 keys, whose hash tables Redis sizes to 131,072 slots: the same fill
#: (0.57) as 100,000 sessions' 300,000 keys in 524,288, so the bytes per session are those of 100,000.
FULL = Mode(smoke=False, duration=10, warmup=3, connections=32, storm=500, sessions=25_000)
SMOKE = Mode(
    smoke=True, duration=1, warmup=1, connections=32, storm=20, sessions=2000, budget_rounds=1, stable_rounds=1,
    peer_rounds=1, many_connections=500,
)  # fmt: skip


@dataclass
class Context:
    mode: Mode
    plan: CpuPlan
    tools: dict[str, str]
    workdir: Path
    redis_url: str
    upstream: str
    idp: IdP
    #: A port for each bff started, chosen up front: the reference IdP must know every redirect URI at its start.
    ports: dict[str, int]


def wrk(
    ctx: Context,
    url: str,
    headers: dict[str, str],
    pid: int,
    cores: Sequence[int],
    *,
    threads: int,
    script: Path | None = None,
) -> WrkResult:
    """A warm-up run, then the measured one (with the CPU of the server's process tree)."""
    for duration, server_pid in ((ctx.mode.warmup, None), (ctx.mode.duration, pid)):
        result = run_wrk(
            ctx.tools["wrk"],
            url,
            duration=duration,
            connections=ctx.mode.connections,
            threads=threads,
            headers=headers,
            cores=cores,
            plan=ctx.plan,
            server_pid=server_pid,
            script=script,
        )
    return result


@contextlib.asynccontextmanager
async def logged_in_bff(
    ctx: Context,
    name: str,
    *,
    workers: int,
    source: Path,
    cores: Sequence[int] | None = None,
    extra: str = "",
    traces_to: str | None = None,
    server_extra: str = "",
    module: str = "bff",
) -> AsyncIterator[Bff]:
    """``bff serve`` logged in; ``traces_to``: with ``[tracing]`` on, every request sampled, exported there;
    ``module``: as ``start_bff``'s."""
    port = ctx.ports[name]
    # Another tree gets a database of its own: an older bff may not read what this one writes (its index encoding,
    # its record format), nor need it to.
    redis_url = ctx.redis_url if source == ROOT else ctx.redis_url.rsplit("/", 1)[0] + "/1"
    config = ctx.workdir / f"{name.replace(' ', '-')}.toml"
    write_config(
        config,
        port=port,
        redis_url=redis_url,
        idp_url=ctx.idp.url,
        client_secret=ctx.idp.client_secret,
        upstream=ctx.upstream,
        # Another tree may predate the shutdown keys: it gets its own defaults.
        drain_delay="0s" if source == ROOT else None,
        shutdown_timeout="2s" if source == ROOT else None,
    )
    if extra:
        config.write_text(config.read_text() + extra)
    if server_extra:
        config.write_text(config.read_text().replace("\n[session]\n", f"{server_extra}\n\n[session]\n", 1))
    env: dict[str, str] = {}
    if traces_to is not None:
        config.write_text(config.read_text().replace("[[routes]]", "[tracing]\nenabled = true\n\n[[routes]]", 1))
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": traces_to,
            "OTEL_TRACES_SAMPLER": "always_on",
            # A queue that holds a few seconds of spans at full load (the SDK's 2,048 would drop most of them).
            "OTEL_BSP_MAX_QUEUE_SIZE": "65536",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "2048",
            "NO_PROXY": "127.0.0.1",
        }
    if cores is None:
        cores = ctx.plan.server if workers == 1 else ctx.plan.two_workers
    bff = await start_bff(
        name,
        python=sys.executable,
        config=config,
        redis_url=redis_url,
        port=port,
        workers=workers,
        cores=cores,
        plan=ctx.plan,
        workdir=ctx.workdir,
        source=source,
        extra_env=env,
        module=module,
    )
    try:
        await bff.log_in()
        yield bff
    finally:
        bff.process.stop()


def load_cores(ctx: Context, workers: int) -> tuple[Sequence[int], int]:
    """The cores wrk runs on, and its thread count, next to a server with ``workers`` workers."""
    cores = ctx.plan.load if workers == 1 else ctx.plan.two_workers_load
    return cores, max(1, len(cores))


def progress(message: str) -> None:
    PARTS.mark(message)


def at_once(ctx: Context, servers: Sequence[Bff], duration: float, cores: Sequence[int]) -> list[WrkResult]:
    """One single-threaded wrk per server, all at the same time (on ``cores``), each server's CPU measured."""
    loads = [Load(b.url + API_PATH, b.headers, b.process.pid) for b in servers]
    return run_wrk_at_once(
        ctx.tools["wrk"], loads, duration=duration, connections=ctx.mode.connections, threads=1, cores=cores,
        plan=ctx.plan,
    )  # fmt: skip
