"""What the benchmark needs from the machine: the tools, a plan of which process runs on which core, processes
started and stopped cleanly, and the CPU time a process tree has used (``/proc``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#: The tools and the Debian/Ubuntu packages that provide them.
TOOLS = {"wrk": "wrk", "nginx": "nginx", "redis-server": "redis-server"}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def find_tools() -> dict[str, str]:
    """The path of each tool; prints the install command and exits 2 when any is missing."""
    found = {name: shutil.which(name) for name in TOOLS}
    missing = sorted(name for name, path in found.items() if path is None)
    if missing:
        packages = " ".join(TOOLS[name] for name in missing)
        sys.stderr.write(
            f"bench: missing {', '.join(missing)}; install with:\n    sudo apt-get install -y {packages}\n"
            f"(macOS: brew install {packages.replace('redis-server', 'redis')})\n"
        )
        raise SystemExit(2)
    return {name: path for name, path in found.items() if path is not None}


@dataclass(frozen=True)
class CpuPlan:
    """Which cores the server under test gets, and which the load (wrk, upstream, Redis, IdP) gets."""

    cores: tuple[int, ...]
    server: tuple[int, ...]
    load: tuple[int, ...]
    #: The cores for a two-worker bff, and the load's when that leaves it a core of its own.
    two_workers: tuple[int, ...]
    two_workers_load: tuple[int, ...]

    @property
    def pinned(self) -> bool:
        return len(self.cores) >= 2

    @property
    def scaling_fair(self) -> bool:
        """Two workers get two cores of their own only with four cores or more (the load needs the rest)."""
        return len(self.cores) >= 4

    def describe(self) -> str:
        if not self.pinned:
            return f"1 core ({self.cores[0]}): nothing pinned, the server shares it with the load"
        two = (
            f"2 workers on cores {_cores(self.two_workers)}, load on {_cores(self.two_workers_load)}"
            if self.scaling_fair
            else f"2 workers: every process shares cores {_cores(self.cores)} (fewer than 4 cores)"
        )
        return f"{len(self.cores)} cores: server on {_cores(self.server)}, load on {_cores(self.load)}; {two}"


def _cores(cores: Sequence[int]) -> str:
    return ",".join(str(c) for c in cores)


def cpu_plan() -> CpuPlan:
    cores = tuple(sorted(os.sched_getaffinity(0)))
    if len(cores) < 2:
        return CpuPlan(cores, cores, cores, cores, cores)
    if len(cores) < 4:
        return CpuPlan(cores, cores[:1], cores[1:], cores, cores)
    return CpuPlan(cores, cores[:1], cores[1:], cores[:2], cores[2:])


def pin_self(plan: CpuPlan) -> None:
    """Move the benchmark itself (and so every child it starts without ``pinned``) to the load cores."""
    if plan.pinned:
        os.sched_setaffinity(0, plan.load)


def pinned(command: Sequence[str], cores: Sequence[int], plan: CpuPlan) -> list[str]:
    """``command`` under ``taskset -c cores`` (its children inherit the mask); as it is on a single core."""
    if not plan.pinned:
        return list(command)
    return ["taskset", "-c", _cores(cores), *command]


# --- processes --------------------------------------------------------------------------------------------------


class Process:
    """A child process with its output in a log file; ``stop()`` ends it (SIGTERM, then SIGKILL)."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        log: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.name = name
        self.log = log
        self.started = time.monotonic()
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                list(command), stdout=out, stderr=subprocess.STDOUT, env=dict(env) if env else None, cwd=cwd
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@contextlib.contextmanager
def running(process: Process) -> Iterator[Process]:
    try:
        yield process
    finally:
        process.stop()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, process: Process, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.check_alive()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"{process.name} did not listen on port {port} within {timeout:.0f}s:\n{process.tail()}")


# --- CPU time ---------------------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (which may hold spaces and parentheses)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    """``root`` and every descendant (uvicorn's workers, nginx's workers)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry.name))  # field 4: ppid
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(parents.get(pid, []))
    return tree


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds used so far by these processes (all their threads)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # fields 14 and 15: utime, stime (clock ticks)
    return total / CLOCK_TICKS


def cpu_seconds_each(pids: Sequence[int]) -> dict[int, float]:
    """User + system CPU seconds used so far by each of these processes."""
    used = {}
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            used[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return used


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, over every core (``/proc/stat``)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest time is inside user)
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS
