"""``wrk`` runs, and the CPU the server spent during them.

wrk's ``--latency`` report gives the 50th and 99th percentiles; its summary gives the request count, errors and
non-2xx answers. CPU per request is the server process tree's utime+stime delta over the run divided by the
requests wrk counted (``/proc/PID/stat``, summed over every worker).
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.bench.system import CpuPlan, cpu_seconds_each, machine_busy_seconds, pinned, process_tree

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
_PERCENTILE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_REQUESTS = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m),", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s*(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50: float  # seconds
    p99: float
    non_2xx: int
    socket_errors: int
    #: The server's CPU seconds (all its processes) during the run; None when it was not measured.
    cpu: float | None = None
    #: The CPU seconds of each server process that did work during the run, busiest first (uvicorn's workers).
    cpu_by_process: tuple[float, ...] = ()
    #: How many of the machine's cores were busy on average during the run (every process, not just the server's).
    cores_busy: float | None = None

    @property
    def busiest_share(self) -> float | None:
        """The busiest server process's part of the server's CPU: 1/workers when the load is spread evenly."""
        return self.cpu_by_process[0] / self.cpu if self.cpu and self.cpu_by_process else None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_request(self) -> float | None:
        return None if self.cpu is None or not self.requests else self.cpu / self.requests * 1e6

    @property
    def failures(self) -> int:
        return self.non_2xx + self.socket_errors


def parse_wrk(output: str) -> WrkResult:
    """Read wrk's report (``--latency``). Raises ValueError when a line it needs is missing."""
    requests = _REQUESTS.search(output)
    percentiles = {m.group(1): float(m.group(2)) * _UNITS[m.group(3)] for m in _PERCENTILE.finditer(output)}
    if requests is None or set(percentiles) != {"50", "99"}:
        raise ValueError(f"unexpected wrk output:\n{output}")
    non_2xx = _NON_2XX.search(output)
    errors = _SOCKET_ERRORS.search(output)
    return WrkResult(
        requests=int(requests.group(1)),
        seconds=float(requests.group(2)) * _UNITS[requests.group(3)],
        p50=percentiles["50"],
        p99=percentiles["99"],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )


@dataclass(frozen=True)
class Load:
    """What one wrk sends, and the server whose CPU is measured (None: not measured)."""

    url: str
    headers: Mapping[str, str]
    server_pid: int | None = None
    script: Path | None = None


def run_wrk(
    binary: str,
    url: str,
    *,
    duration: float,
    connections: int,
    threads: int,
    headers: Mapping[str, str],
    cores: Sequence[int],
    plan: CpuPlan,
    server_pid: int | None = None,
    script: Path | None = None,
) -> WrkResult:
    """One wrk run; with ``server_pid``, the CPU its process tree used during the run; ``script`` is a wrk Lua
    script (``-s``)."""
    load = Load(url, headers, server_pid, script)
    [result] = run_wrk_at_once(
        binary, [load], duration=duration, connections=connections, threads=threads, cores=cores, plan=plan
    )
    return result


def run_wrk_at_once(
    binary: str,
    loads: Sequence[Load],
    *,
    duration: float,
    connections: int,
    threads: int,
    cores: Sequence[int],
    plan: CpuPlan,
) -> list[WrkResult]:
    """One wrk per load, all running at the same time, each with ``connections`` connections."""
    trees = [process_tree(load.server_pid) if load.server_pid is not None else [] for load in loads]
    before, machine_before = [cpu_seconds_each(pids) for pids in trees], machine_busy_seconds()
    running = [
        subprocess.Popen(
            pinned(_command(binary, load, duration, connections, threads), cores, plan),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for load in loads
    ]
    outputs = [process.communicate(timeout=duration + 60) for process in running]
    after, machine_after = [cpu_seconds_each(pids) for pids in trees], machine_busy_seconds()
    busy, total = (a - b for a, b in zip(machine_after, machine_before, strict=True))
    results = []
    for load, process, (stdout, stderr), was, now in zip(loads, running, outputs, before, after, strict=True):
        if process.returncode != 0:
            raise RuntimeError(f"wrk failed ({process.returncode}): {stderr}{stdout}")
        result = parse_wrk(stdout)
        if load.server_pid is not None:
            each = sorted((now[pid] - was.get(pid, 0.0) for pid in now), reverse=True)
            result = dataclasses.replace(
                result,
                cpu=sum(each),
                cpu_by_process=tuple(c for c in each if c > 0),
                cores_busy=busy / total * (os.cpu_count() or 1) if total else None,  # /proc/stat sums every core
            )
        results.append(result)
    return results


def _command(binary: str, load: Load, duration: float, connections: int, threads: int) -> list[str]:
    command = [binary, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency"]
    if load.script is not None:
        command += ["-s", str(load.script)]
    for name, value in load.headers.items():
        command += ["-H", f"{name}: {value}"]
    command.append(load.url)
    return command


#: Each request carries the next cookie of a file (one per line), round robin: many sessions, one connection pool.
_ROTATE = """
local cookies = {}
for line in io.lines("%s") do cookies[#cookies + 1] = line end
local i = 0
request = function()
  i = i %% #cookies + 1
  return wrk.format(nil, nil, {["Cookie"] = "%s=" .. cookies[i], ["X-CSRF"] = "1"})
end
"""


def rotating_cookies_script(directory: Path, cookie_name: str, cookies: Sequence[str]) -> Path:
    """A wrk script that sends each request with the next of ``cookies``."""
    values = directory / "cookies.txt"
    values.write_text("\n".join(cookies) + "\n")
    script = directory / "rotate-cookies.lua"
    script.write_text(_ROTATE % (values, cookie_name))
    return script
