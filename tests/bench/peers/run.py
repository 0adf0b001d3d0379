"""The peers' part of a run: bff's realistic rows' servers and the peers, each alone on the server core, in
interleaved rounds (``compare.py``), with this run's load."""

from __future__ import annotations

from tests.bench.context import ROOT, Context, load_cores
from tests.bench.peers import compare as peers
from tests.bench.sessions import Realistic
from tests.bench.wrk import Load, WrkResult, run_wrk_at_once


async def measure(ctx: Context, realistic: Realistic, peer_ports: dict[str, int]) -> peers.Comparison:
    """bff's realistic case and its one-session case (two of the realistic rows' bffs, warm, with their scripts)
    and the peers, each alone on the server core, in interleaved rounds (``peers/compare.py``)."""
    cores, threads = load_cores(ctx, 1)

    def alone(load: Load, seconds: float) -> WrkResult:
        [result] = run_wrk_at_once(
            ctx.tools["wrk"], [load], duration=seconds, connections=ctx.mode.connections, threads=threads,
            cores=cores, plan=ctx.plan,
        )  # fmt: skip
        return result

    one, many = realistic.loads[0], realistic.loads[1]
    return await peers.run_peers(
        idp=ctx.idp, redis_url=ctx.redis_url, upstream=ctx.upstream, peer_ports=peer_ports, workdir=ctx.workdir,
        cache=ROOT / ".bench", cores=ctx.plan.server, plan=ctx.plan,
        many=(f"bff, 1 worker, {realistic.sessions:,} sessions, uniform", many),
        one=("bff, 1 worker, one session", one),
        alone=alone, rounds=ctx.mode.peer_rounds, duration=ctx.mode.peer_duration, warmup=ctx.mode.warmup,
    )  # fmt: skip
