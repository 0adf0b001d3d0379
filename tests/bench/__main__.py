"""``python -m tests.bench [--smoke] [--compare-with DIR]``: see the package docstring for what runs.

Exit status: 0 when every check passes (and, in full mode, every target); 1 otherwise; 2 when a tool is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tests.bench import limits, nginx, redis_memory, sessions, websocket_row
from tests.bench import memory as rss
from tests.bench.comparison import paired_comparison
from tests.bench.context import FULL, ROOT, SMOKE, Context, Mode, load_cores, logged_in_bff, progress, wrk
from tests.bench.idp import NAMES as IDP_NAMES
from tests.bench.idp import Kind, default_kind, start_idp
from tests.bench.parts import PARTS
from tests.bench.peers import compare as peers
from tests.bench.peers import run as peers_run
from tests.bench.report import Outcome, Run, outcomes_table, runs_table
from tests.bench.servers import API_PATH
from tests.bench.storm import StormResult, run_storm, storm_outcomes
from tests.bench.system import cpu_plan, find_tools, free_port, pin_self
from tests.bench.telemetry_rows import TELEMETRY_ROWS, TRACING, telemetry_costs, telemetry_outcomes, tracing_outcome
from tests.bench.throughput import WORKER_BUDGET, BudgetedScaling, budgeted_scaling, checked, throughput_outcomes
from tests.bench.wrk import WrkResult
from tests.support.redis_server import RedisProcess
from tests.support.servers import serve
from tests.support.tracing import Collector

# The start-up's target; every other target lives with its part (throughput.py, redis_memory.py, ...).
MAX_READY_SECONDS = 2.0

BFF_NAMES = (
    "bff-1-worker",
    "bff-compare",
    "bff-1-worker-again",
    "bff-2-workers",
    "bff-budgeted-1-worker",
    "bff-budgeted-2-workers",
    "bff-websocket",
    "bff-telemetry-off",
    *(f"bff-telemetry-on-{i}" for i in range(len(TELEMETRY_ROWS))),
    "bff-tracing-on",
    *sessions.NAMES,
    "bff-memory",
    *limits.NAMES,
)


async def bench(mode: Mode, compare_with: Path | None, idp_kind: Kind, only: str | None = None) -> int:
    tools = find_tools()
    plan = cpu_plan()
    pin_self(plan)
    rss.raise_file_limit()  # 2,000 connections: wrk's, the worker's, this process's
    runs: list[Run] = []
    outcomes: list[Outcome] = []
    storms: dict[str, StormResult] = {}
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bff-bench-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        redis = stack.enter_context(RedisProcess(tools["redis-server"]))
        upstream_port, proxy_port, idp_port = free_port(), free_port(), free_port()
        stack.callback(nginx.start_upstream(tools["nginx"], workdir, upstream_port, plan.load, plan).stop)
        proxy = nginx.start_proxy(tools["nginx"], workdir, proxy_port, upstream_port, plan.server, plan)
        stack.callback(proxy.stop)
        ports = {name: free_port() for name in BFF_NAMES}
        callbacks = [f"http://127.0.0.1:{port}/bff/callback" for port in ports.values()]
        peer_ports = peers.ports()
        callbacks += peers.redirect_uris(peer_ports)
        idp = start_idp(idp_kind, workdir, idp_port, callbacks, plan.load, plan, ROOT)
        stack.callback(idp.process.stop)
        ctx = Context(mode, plan, tools, workdir, redis.url, f"http://127.0.0.1:{upstream_port}", idp, ports)
        cores, threads = load_cores(ctx, 1)
        if only == "telemetry":  # the paired telemetry rows alone: minutes, not the whole benchmark
            costs = await telemetry_costs(ctx)
            lines = outcomes_table(telemetry_outcomes(costs, mode), smoke=mode.smoke)
            sys.stdout.write("\n".join(lines) + "\n")
            return 1 if any(o.failed(smoke=mode.smoke) for o in telemetry_outcomes(costs, mode)) else 0
        if only == "limits":  # the paired limits row alone
            limit_outcomes = await limits.measure_paired(ctx, mode.budget_rounds)
            sys.stdout.write("\n".join(outcomes_table(limit_outcomes, smoke=mode.smoke)) + "\n")
            return 1 if any(o.failed(smoke=mode.smoke) for o in limit_outcomes) else 0
        if only == "sessions":  # the realistic rows, and with --compare-with the paired one-session comparison
            realistic = _realistic(ctx, outcomes, notes, await sessions.measure(ctx, _one_worker(ctx)))
            if compare_with is not None:
                async with (
                    logged_in_bff(ctx, "bff-compare", workers=1, source=compare_with) as other,
                    logged_in_bff(ctx, "bff-1-worker-again", workers=1, source=ROOT) as again,
                ):
                    notes.append(paired_comparison(ctx, compare_with, other, again))
            lines = [
                *runs_table(realistic, None),
                "",
                *[f"* {n}" for n in notes],
                "",
                *outcomes_table(outcomes, smoke=mode.smoke),
            ]
            sys.stdout.write("\n".join(lines) + "\n")
            return 1 if any(o.failed(smoke=mode.smoke) for o in outcomes) else 0

        progress("nginx proxy baseline")
        baseline = wrk(
            ctx, f"http://127.0.0.1:{proxy_port}{API_PATH}", {"X-CSRF": "1"}, proxy.pid, cores, threads=threads
        )
        runs.append(Run("nginx reverse proxy, 1 worker (baseline)", baseline))

        progress("bff, 1 worker")
        async with logged_in_bff(ctx, "bff-1-worker", workers=1, source=ROOT) as bff:
            ready = bff.ready_seconds
            outcomes.append(await checked(bff, idp.url))
            one = wrk(ctx, bff.url + API_PATH, bff.headers, bff.process.pid, cores, threads=threads)
            runs.append(Run("bff, 1 worker, valid session", one))
            progress(f"refresh storm, 1 worker, {mode.storm} requests")
            storms["1 worker"] = await run_storm(bff, idp, concurrency=mode.storm, idp_delay=mode.idp_delay)

        many = f"{sessions.population(mode.smoke):,} sessions"
        progress(f"realistic case: three bffs started, {many} created")
        async with sessions.started(ctx, _one_worker(ctx)) as live:
            runs += _realistic(ctx, outcomes, notes, live.paired(ctx))
            progress(f"peers: bff ({many}; one session), Apache httpd + mod_auth_openidc, Node BFF, each alone")
            comparison = await peers_run.measure(ctx, live, peer_ports)
        runs += peers.peer_runs(comparison)
        outcomes += peers.peer_outcomes(comparison)
        notes.append(peers.note(comparison))

        progress("worker memory: idle keep-alive connections, active sessions; p99 with many connections")
        worker_memory = await rss.measure_worker(ctx)
        runs.append(worker_memory.run)
        outcomes += worker_memory.outcomes(smoke=mode.smoke)
        if only == "peers":  # bff's rows, the peers' and the worker's memory: a few minutes
            PARTS.finish()
            lines = [*runs_table(runs, baseline), "", *[f"* {n}" for n in notes], ""]
            lines += [*outcomes_table(outcomes, smoke=mode.smoke), "", *PARTS.table()]
            sys.stdout.write("\n".join(lines) + "\n")
            return 1 if any(o.failed(smoke=mode.smoke) for o in outcomes) else 0

        progress("WebSocket echo, 1 worker")
        echo = await websocket_row.measure(ctx, stack)
        notes.append(echo.describe())
        outcomes.append(websocket_row.outcome(echo))

        if compare_with is not None:
            progress(f"bff from {compare_with}, 1 worker")
            async with (
                logged_in_bff(ctx, "bff-compare", workers=1, source=compare_with) as other,
                logged_in_bff(ctx, "bff-1-worker-again", workers=1, source=ROOT) as again,
            ):
                before = wrk(ctx, other.url + API_PATH, other.headers, other.process.pid, cores, threads=threads)
                runs.append(Run(f"bff from {compare_with}, 1 worker, valid session (before)", before))
                progress("bff, 1 worker, once more (the comparison between two runs of this tree)")
                repeat = wrk(ctx, again.url + API_PATH, again.headers, again.process.pid, cores, threads=threads)
                runs.append(Run("bff, 1 worker, valid session (again)", repeat))
                progress(f"bff and bff from {compare_with} at the same time, {mode.budget_rounds} rounds")
                notes.append(paired_comparison(ctx, compare_with, other, again))

        collector = Collector()
        with serve(collector, lifespan="off") as collector_url:
            telemetry = await telemetry_costs(ctx, traces_to=collector_url)
        tracing = next(cost for cost in telemetry if cost.what == TRACING)
        runs.append(
            Run("bff, 1 worker, tracing on (100% sampled, exported to a local collector stub)", tracing.median_round)
        )
        outcomes.append(tracing_outcome(tracing, collector.spans()))  # its bff stopped: its last batch is exported
        outcomes += await limits.measure_paired(ctx, min(mode.budget_rounds, limits.FULL_ROUNDS))

        progress("bff, 2 workers")
        cores2, threads2 = load_cores(ctx, 2)
        async with logged_in_bff(ctx, "bff-2-workers", workers=2, source=ROOT) as bff2:
            two = wrk(ctx, bff2.url + API_PATH, bff2.headers, bff2.process.pid, cores2, threads=threads2)
            shared = "" if plan.scaling_fair else " (every core shared with the load)"
            runs.append(Run(f"bff, 2 workers, valid session{shared}", two))
            progress(f"refresh storm, 2 workers, {mode.storm} requests")
            storms["2 workers"] = await run_storm(bff2, idp, concurrency=mode.storm, idp_delay=mode.idp_delay)

        budgeted: BudgetedScaling | str | None = None
        if not plan.scaling_fair:
            progress(f"1 and 2 workers at once, each worker capped at {WORKER_BUDGET} of a core")
            budgeted = await budgeted_scaling(ctx)
            if isinstance(budgeted, BudgetedScaling):
                for i, (b1, b2) in enumerate(budgeted.rounds):
                    cap = f"each worker capped at {WORKER_BUDGET} of a core, round {i + 1}"
                    runs.append(Run(f"bff, 1 worker, {cap}", b1))
                    runs.append(Run(f"bff, 2 workers at the same time, {cap}", b2))

    progress(f"Redis memory, {mode.sessions:,} sessions")
    memory = await redis_memory.measure(
        tools["redis-server"], mode.sessions, sample=min(1000, mode.sessions), expiry_wait=2 if mode.smoke else 10
    )

    failed = sum(run.result.failures for run in runs)
    outcomes.append(Outcome("every benchmark request answered 2xx", f"{failed} failed", failed == 0, "check"))
    outcomes += throughput_outcomes(ctx, baseline, one, two, budgeted)
    outcomes += telemetry_outcomes(telemetry, mode)
    for name, storm in storms.items():
        outcomes += storm_outcomes(name, storm)
    outcomes += redis_memory.memory_outcomes(memory)
    outcomes.append(
        Outcome(f"`bff serve` answers /readyz 200 within {MAX_READY_SECONDS:.0f} s", f"{ready:.2f} s",
                ready <= MAX_READY_SECONDS)
    )  # fmt: skip
    PARTS.finish()
    outcomes.append(PARTS.outcome(smoke=mode.smoke))
    _print(ctx, runs, baseline, outcomes, memory, notes)
    sys.stdout.write("\n".join(["", "Elapsed per part:", "", *PARTS.table(), ""]))
    return 1 if any(o.failed(smoke=mode.smoke) for o in outcomes) else 0


def _one_worker(ctx: Context) -> sessions.StartBff:
    return lambda name: logged_in_bff(ctx, name, workers=1, source=ROOT)


def _realistic(ctx: Context, outcomes: list[Outcome], notes: list[str], rows: sessions.SessionRows) -> list[Run]:
    """The realistic rows (``tests.bench.sessions``): their runs; their outcomes and note appended."""
    outcomes += rows.outcomes()
    notes.append(rows.note(ctx.mode.duration))
    return rows.runs()


def _print(
    ctx: Context,
    runs: Sequence[Run],
    baseline: WrkResult,
    outcomes: Sequence[Outcome],
    memory: redis_memory.MemoryResult,
    notes: Sequence[str],
) -> None:
    mode = ctx.mode
    cpu = platform.processor() or platform.machine()
    lines = [
        f"## bff benchmark ({mode.name} mode), {time.strftime('%Y-%m-%d')}",
        "",
        f"* Machine: {len(ctx.plan.cores)} cores ({cpu}), Python {platform.python_version()}, {platform.system()}; "
        f"{ctx.plan.describe()}.",
        f"* Load: wrk, {mode.connections} keep-alive connections, {mode.duration:.0f} s after a "
        f"{mode.warmup:.0f} s warm-up; upstream: nginx, a fixed {len(nginx.UPSTREAM_BODY)}-byte JSON answer; "
        "Redis session store; CPU/request: the server's utime+stime over the run (all its processes) per request.",
        f"* IdP: {ctx.idp.name}; its token endpoint delayed {mode.idp_delay * 1000:.0f} ms for the refresh storm.",
        f"* Sessions for the memory test: access token {memory.access_token_bytes} B, refresh token "
        f"{memory.refresh_token_bytes} B, ID token {memory.id_token_bytes} B; created in "
        f"{memory.create_seconds:.1f} s, "
        f"all looked up in {memory.lookup_seconds:.1f} s, each read cutting its TTL to 1 s; "
        f"{memory.reclaimed_by_redis:.0%} of them removed by Redis's background expiry {memory.expiry_seconds:.1f} s "
        "after the last read, the rest on access.",
        "",
        *runs_table(runs, baseline),
        "",
        *[f"* {note}" for note in notes],
        *([""] if notes else []),
        *outcomes_table(outcomes, smoke=mode.smoke),
        "",
    ]
    sys.stdout.write("\n".join(lines))
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="seconds, not minutes: tiny runs, targets not enforced")
    parser.add_argument(
        "--compare-with",
        type=Path,
        metavar="DIR",
        help="also run the bff of another source tree (e.g. a `git worktree` of an older commit) in the same run",
    )
    parser.add_argument(
        "--idp",
        choices=list(IDP_NAMES),
        default=default_kind(),
        help="the OpenID Provider (default: the reference IdP, bff_devtools.devidp, when it is there)",
    )
    parser.add_argument("--duration", type=float, help="seconds per wrk run (default: 10, smoke 1)")
    parser.add_argument("--sessions", type=int, help="sessions for the Redis memory test (default: 25000, smoke 2000)")
    parser.add_argument(
        "--rounds", type=int, help="rounds of every paired or interleaved measurement (default: 5, 3 for the steady "
        "rows; smoke 1)"
    )  # fmt: skip
    parser.add_argument(
        "--only",
        choices=["telemetry", "sessions", "peers", "limits"],
        help="run only this part (telemetry: the paired TELEMETRY_ROWS comparison; sessions: one session against "
        "10,000, paired, and with --compare-with the paired one-session comparison; peers: nginx, bff's 1-worker "
        "and realistic rows, the peers and the worker's memory; limits: the paired limits on vs off row)",
    )
    args = parser.parse_args(argv)
    mode = SMOKE if args.smoke else FULL
    if args.duration or args.sessions or args.rounds:
        rounds = args.rounds
        mode = dataclasses.replace(
            mode,
            duration=args.duration or mode.duration,
            sessions=args.sessions or mode.sessions,
            budget_rounds=rounds or mode.budget_rounds,
            stable_rounds=rounds or mode.stable_rounds,
            peer_rounds=rounds or mode.peer_rounds,
        )
    compare = args.compare_with.resolve() if args.compare_with else None
    if compare is not None and not (compare / "bff" / "__init__.py").is_file():
        parser.error(f"--compare-with {compare}: not a bff source tree (no bff/__init__.py)")
    return asyncio.run(bench(mode, compare, args.idp, args.only))


if __name__ == "__main__":
    sys.exit(main())
