"""The peers' part of the benchmark: each peer started, logged in and checked (:func:`~tests.bench.peers.check_proxy`),
then bff's rows and the peers timed the same way, each alone on the server core; the targets compare bff's CPU per
request with each peer's.

Every contender is loaded by the same wrk Lua script over a cookie table (``wrk.rotating_cookies_script``, as the
realistic rows of ``sessions.py``): bff with 10,000 sessions drawn uniformly (the realistic case) and with one
session, each peer with its one session. All of them stay up, and the rounds interleave them (every contender once
per round, one after the other, each alone): this machine's speed drifts by tens of percent from one minute to the
next, so each peer's ratio is the median over rounds of bff's CPU per request in that round over the peer's.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.bench.idp import IdP
from tests.bench.peers import Peer, Skipped, apache, check_proxy, node
from tests.bench.report import Outcome, Run
from tests.bench.servers import API_PATH
from tests.bench.system import CpuPlan, free_port
from tests.bench.wrk import Load, WrkResult, rotating_cookies_script

#: bff's CPU per request in the realistic case may be at most this share of each peer's.
MAX_PEER_CPU_RATIO = 0.35
PEERS = ("apache", "node")
#: Rounds in which every contender is loaded once, alone (the median of five spares two odd rounds).
ROUNDS = 5

#: One wrk run of ``load`` for ``seconds``, alone on the load cores, its server's CPU measured.
Alone = Callable[[Load, float], WrkResult]


def ports() -> dict[str, int]:
    return {name: free_port() for name in PEERS}


def redirect_uris(peer_ports: dict[str, int]) -> list[str]:
    return [apache.redirect_uri(peer_ports["apache"]), node.redirect_uri(peer_ports["node"])]


@dataclass(frozen=True)
class Row:
    """A contender of the comparison: bff in one of its cases, or a peer."""

    name: str
    #: One result per round; empty when it was not timed.
    results: tuple[WrkResult, ...] = ()
    #: Why the peer did not run (not installed); None when it ran.
    skipped: str | None = None
    #: What the correctness check found; ``check_ok`` False: it failed (the peer was not timed).
    check: str = ""
    check_ok: bool = True

    @property
    def cpu_us(self) -> float:
        """The median over rounds of the CPU µs per request."""
        return statistics.median(r.cpu_us_per_request or 0.0 for r in self.results) if self.results else 0.0

    @property
    def median_round(self) -> WrkResult | None:
        """The round whose CPU per request is the median (the one shown in the table)."""
        ordered = sorted(self.results, key=lambda r: r.cpu_us_per_request or 0.0)
        return ordered[len(ordered) // 2] if ordered else None


@dataclass(frozen=True)
class Comparison:
    #: bff's realistic case (10,000 sessions, uniform) and its one-session case.
    many: Row
    one: Row
    peers: list[Row]
    rounds: int
    duration: float
    warmup: float


async def run_peers(
    *,
    idp: IdP,
    redis_url: str,
    upstream: str,
    peer_ports: dict[str, int],
    workdir: Path,
    cache: Path,
    cores: Sequence[int],
    plan: CpuPlan,
    many: tuple[str, Load],
    one: tuple[str, Load],
    alone: Alone,
    rounds: int,
    duration: float,
    warmup: float,
) -> Comparison:
    """Every peer started on ``cores``, checked and warmed up (``warmup`` seconds of load each); then ``rounds`` rounds
    of ``duration`` seconds over bff's two cases (``many``, ``one``: a row name and its load, bffs already warm) and
    the peers."""
    rows: dict[str, Row] = {}
    loads = dict((many, one))
    async with contextlib.AsyncExitStack() as stack:
        for key in PEERS:
            name = apache.NAME if key == "apache" else node.NAME
            try:
                if key == "apache":
                    peer = await apache.start(idp, redis_url, upstream, peer_ports[key], workdir, cores, plan)
                else:
                    directory = node.install(cache)
                    peer = await node.start(idp, redis_url, upstream, peer_ports[key], workdir, cores, plan, directory)
            except Skipped as exc:  # its packages are missing: said, and its target not enforced
                sys.stderr.write(f"SKIPPED {name}: {exc}\n")
                rows[name] = Row(name, skipped=str(exc))
                continue
            except (RuntimeError, OSError) as exc:  # installed, yet it did not start or log in: a failed check
                rows[name] = Row(name, check=f"did not start: {str(exc)[:300]}", check_ok=False)
                continue
            stack.callback(peer.stop)
            try:
                rows[name] = Row(name, check=await check_proxy(name, peer.url, peer.headers, idp.url))
            except (RuntimeError, ValueError) as exc:
                rows[name] = Row(name, check=str(exc), check_ok=False)
                continue
            loads[name] = _load(peer, workdir / f"wrk-{key}")
        for name, load in loads.items():
            if name not in (many[0], one[0]):  # bff's two were loaded in the realistic rounds just before
                alone(load, warmup)
        results: dict[str, list[WrkResult]] = {name: [] for name in loads}
        for _ in range(rounds):
            for name, load in loads.items():
                results[name].append(alone(load, duration))
    for name, found in results.items():
        rows[name] = Row(name, tuple(found), check=rows[name].check if name in rows else "")
    peers = [rows[name] for name in rows if name not in (many[0], one[0])]
    return Comparison(rows[many[0]], rows[one[0]], peers, rounds, duration, warmup)


def _load(peer: Peer, directory: Path) -> Load:
    """wrk's load for ``peer``: bff's script, over a table of the peer's one session cookie."""
    cookie_name, _, value = peer.headers["Cookie"].partition("=")
    directory.mkdir(parents=True, exist_ok=True)
    return Load(peer.url + API_PATH, {}, peer.process.pid, rotating_cookies_script(directory, cookie_name, [value]))


def peer_runs(comparison: Comparison) -> list[Run]:
    """A table row per contender timed: its median round."""
    rows = [(f"{comparison.many.name}, alone", comparison.many), (f"{comparison.one.name}, alone", comparison.one)]
    rows += [(f"{row.name}, 1 process, one session", row) for row in comparison.peers]
    return [Run(name, result) for name, row in rows if (result := row.median_round) is not None]


def peer_outcomes(comparison: Comparison) -> list[Outcome]:
    """A correctness check and the CPU target per peer; a skipped peer's target is n/a, saying why."""
    outcomes = []
    many, one = comparison.many, comparison.one
    for row in comparison.peers:
        target = f"{many.name}: <= {MAX_PEER_CPU_RATIO}x the CPU/request of {row.name}"
        if row.skipped is not None:
            outcomes.append(Outcome(target, f"SKIPPED: {row.skipped}", None, note="peer skipped"))
            continue
        outcomes.append(
            Outcome(f"{row.name}: proxies as bff does (checked before timing)", row.check, row.check_ok, "check")
        )
        if row.results:
            ratios = _ratios(many, row)
            ratio = statistics.median(ratios)
            rps = statistics.median(m.rps / p.rps for m, p in zip(many.results, row.results, strict=True))
            measured = (
                f"{ratio:.3f}x (rounds {min(ratios):.2f}-{max(ratios):.2f}; {many.cpu_us:.0f} vs {row.cpu_us:.0f} µs;"
                f" req/s {rps:.2f}x); bff with one session: {statistics.median(_ratios(one, row)):.2f}x"
            )
            outcomes.append(Outcome(target, measured, ratio <= MAX_PEER_CPU_RATIO))
    return outcomes


def note(comparison: Comparison) -> str:
    timed = [comparison.many, comparison.one, *(row for row in comparison.peers if row.results)]
    return (
        f"Peers: {len(timed)} contenders (bff's two cases and each peer timed) each loaded alone on the server "
        f"core, one after the other, by the same wrk script over a cookie table, {comparison.rounds} "
        f"round(s) of {comparison.duration:.0f} s after {comparison.warmup:.0f} s of warm-up for each peer (bff's "
        "were warm from the realistic rows); each peer's ratio is the median over rounds of bff's CPU/request in that "
        "round over the peer's."
    )


def _ratios(bff: Row, peer: Row) -> list[float]:
    return [
        (ours.cpu_us_per_request or 0.0) / theirs.cpu_us_per_request if theirs.cpu_us_per_request else float("inf")
        for ours, theirs in zip(bff.results, peer.results, strict=True)
    ]
