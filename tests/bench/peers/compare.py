"""The peers' part of the benchmark: each peer started, logged in, checked (:func:`~tests.bench.peers.check_proxy`)
and then timed by the same wrk load as bff's rows; the targets compare bff's CPU per request with each peer's."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.bench.idp import IdP
from tests.bench.peers import Peer, Skipped, apache, check_proxy, node
from tests.bench.report import Outcome, Run
from tests.bench.system import CpuPlan, free_port
from tests.bench.wrk import WrkResult

#: bff's CPU per request in the realistic case may be at most this share of each peer's.
MAX_PEER_CPU_RATIO = 0.35
PEERS = ("apache", "node")


def ports() -> dict[str, int]:
    return {name: free_port() for name in PEERS}


def redirect_uris(peer_ports: dict[str, int]) -> list[str]:
    return [apache.redirect_uri(peer_ports["apache"]), node.redirect_uri(peer_ports["node"])]


@dataclass(frozen=True)
class PeerRow:
    name: str
    result: WrkResult | None = None
    #: Why the peer did not run (not installed, did not start); None when it ran.
    skipped: str | None = None
    #: What the correctness check found; ``check_ok`` False: it failed (the peer was not timed).
    check: str = ""
    check_ok: bool = True


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
    timed: Callable[[Peer], WrkResult],
) -> list[PeerRow]:
    """Every peer in turn, on ``cores``; ``timed`` loads a checked peer as bff's rows are loaded."""
    rows = []
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
            rows.append(PeerRow(name, skipped=str(exc)))
            continue
        except (RuntimeError, OSError) as exc:  # installed, yet it did not start or log in: a failed check
            rows.append(PeerRow(name, check=f"did not start: {str(exc)[:300]}", check_ok=False))
            continue
        try:
            try:
                check = await check_proxy(name, peer.url, peer.headers, idp.url)
            except (RuntimeError, ValueError) as exc:
                rows.append(PeerRow(name, check=str(exc), check_ok=False))
                continue
            rows.append(PeerRow(name, timed(peer), check=check))
        finally:
            peer.stop()
    return rows


def peer_runs(rows: Sequence[PeerRow]) -> list[Run]:
    return [Run(f"{row.name}, 1 process, valid session", row.result) for row in rows if row.result is not None]


def peer_outcomes(rows: Sequence[PeerRow], bff: WrkResult, bff_row: str) -> list[Outcome]:
    """A correctness check and the CPU target per peer; a skipped peer's target is n/a, saying why."""
    outcomes = []
    ours = bff.cpu_us_per_request or 0.0
    for row in rows:
        target = f"{bff_row}: <= {MAX_PEER_CPU_RATIO}x the CPU/request of {row.name}"
        if row.skipped is not None:
            outcomes.append(Outcome(target, f"SKIPPED: {row.skipped}", None, note="peer skipped"))
            continue
        outcomes.append(
            Outcome(f"{row.name}: proxies as bff does (checked before timing)", row.check, row.check_ok, "check")
        )
        if row.result is not None:
            theirs = row.result.cpu_us_per_request or 0.0
            ratio = ours / theirs if theirs else float("inf")
            measured = f"{ratio:.2f}x ({ours:.0f} vs {theirs:.0f} µs; req/s {bff.rps / row.result.rps:.2f}x)"
            outcomes.append(Outcome(target, measured, ratio <= MAX_PEER_CPU_RATIO))
    return outcomes
