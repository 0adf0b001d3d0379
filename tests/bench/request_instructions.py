"""``python -m tests.bench.request_instructions``: CPU instructions per whole proxied request, telemetry on and off.

Two ``bff serve`` processes of this tree (one worker each) run under ``valgrind --tool=callgrind`` with
instrumentation off until they are logged in and warmed up; then the counters are zeroed, wrk (one connection
each) sends requests for ``--duration`` seconds, and the counters are dumped; ``--idle`` seconds without requests
give each server's instructions per second at rest, taken off the loaded window (the two answer at different rates).
Everything the server does for a request is counted (uvicorn's protocol, the proxy, the store read, the upstream
call, the hooks, the access log's flush), without the timing noise of a shared machine; the count still moves by a
few thousand per request with the rate valgrind leaves. Valgrind runs ~50x slower: the servers start with the access
log's flush delay scaled by ``SLOWDOWN`` (the launcher sets it; nothing in ``bff/`` reads a switch), so a flush
carries about as many lines as in a native run and its per-flush work (the write, the histograms' fold) is not
charged ~50 times over. Needs valgrind, wrk, nginx, redis-server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.bench import nginx
from tests.bench.idp import default_kind, start_idp
from tests.bench.servers import API_PATH, COOKIE_NAME, log_in_through_idp
from tests.bench.system import Process, cpu_plan, find_tools, free_port
from tests.support.configs import write_config
from tests.support.redis_server import RedisProcess

ROOT = Path(__file__).resolve().parents[2]
ON = '\n[logging]\nformat = "json"\naccess_log = true\n\n[metrics]\nlisten = "127.0.0.1:{port}"\n'
_REQUESTS = re.compile(r"(\d+) requests in")
_TOTALS = re.compile(r"^(?:summary|totals): (\d+)", re.MULTILINE)


#: How much slower a server runs under callgrind than natively (roughly): its access-log flush delay is this much
#: longer, so that a flush holds the lines of the same number of requests.
SLOWDOWN = 50
_LAUNCH = (
    "import sys; import bff.telemetry.access_log as log; from bff.cli import main; "
    f"log.FLUSH_DELAY *= {SLOWDOWN}; sys.exit(main())"
)


def _valgrind(name: str, config: Path, out: Path, workdir: Path) -> Process:
    command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    command += [sys.executable, "-c", _LAUNCH, "serve", "--config", str(config), "--log-level", "warning"]
    env = {"PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1", "PATH": "/usr/bin:/bin"}
    return Process(name, command, workdir / f"{name}.log", env=env, cwd=str(ROOT))


async def _ready(url: str, process: Process) -> None:
    deadline = time.monotonic() + 300
    async with httpx.AsyncClient(timeout=5) as http:
        while time.monotonic() < deadline:
            process.check_alive()
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.5)
    raise RuntimeError(f"{process.name} never became ready:\n{process.tail()}")


def _wrk(url: str, cookie: str, duration: float) -> subprocess.Popen[str]:
    command = ["wrk", "-t1", "-c1", f"-d{duration:.0f}s", "--timeout", "30s"]
    command += ["-H", f"Cookie: {COOKIE_NAME}={cookie}", "-H", "X-CSRF: 1", url + API_PATH]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def _control(*args: str | int) -> None:
    subprocess.run(["callgrind_control", *map(str, args)], check=True, capture_output=True)


def _dump(pid: int, out: Path, keep: Path | None) -> int:
    """Dump ``pid``'s counters since the last zeroing (a copy in ``keep``, for ``callgrind_annotate``); their total."""
    _control("-d", pid)
    latest = max(out.parent.glob(out.name + "*"), key=lambda p: p.stat().st_mtime)
    match = _TOTALS.search(latest.read_text(errors="replace"))
    assert match is not None, latest
    if keep is not None:
        shutil.copyfile(latest, keep / f"callgrind-{out.stem}.out")
    return int(match.group(1))


async def measure(duration: float, warmup: float, idle: float, keep: Path | None) -> dict[str, float]:
    tools = find_tools()
    plan = cpu_plan()
    with tempfile.TemporaryDirectory(prefix="bff-callgrind-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        redis = stack.enter_context(RedisProcess(tools["redis-server"]))
        upstream_port, idp_port = free_port(), free_port()
        stack.callback(nginx.start_upstream(tools["nginx"], workdir, upstream_port, plan.load, plan).stop)
        ports = {"off": free_port(), "on": free_port()}
        callbacks = [f"http://127.0.0.1:{port}/bff/callback" for port in ports.values()]
        idp = start_idp(default_kind(), workdir, idp_port, callbacks, plan.load, plan, ROOT)
        stack.callback(idp.process.stop)
        servers = {}
        for name, port in ports.items():
            config = workdir / f"{name}.toml"
            write_config(
                config, port=port, redis_url=redis.url, idp_url=idp.url, client_secret=idp.client_secret,
                upstream=f"http://127.0.0.1:{upstream_port}",
            )  # fmt: skip
            if name == "on":
                config.write_text(config.read_text() + ON.format(port=free_port()))
            process = _valgrind(f"bff-{name}", config, workdir / f"{name}.callgrind", workdir)
            stack.callback(process.stop)
            servers[name] = (f"http://127.0.0.1:{port}", process, workdir / f"{name}.callgrind")
        cookies = {}
        for name, (url, process, _) in servers.items():
            await _ready(url, process)
            cookies[name] = await log_in_through_idp(name, f"{url}/bff/login", url, COOKIE_NAME)
        for load in [_wrk(url, cookies[n], warmup) for n, (url, _, _) in servers.items()]:
            load.communicate()
        pids = {name: process.pid for name, (_, process, _) in servers.items()}
        outs = {name: out for name, (_, _, out) in servers.items()}
        for pid in pids.values():
            _control("-i", "on", pid)
            _control("-z", pid)
        zeroed = time.monotonic()
        loads = {n: _wrk(url, cookies[n], duration) for n, (url, _, _) in servers.items()}
        counts = {}
        for name, load in loads.items():
            output = load.communicate()[0]
            match = _REQUESTS.search(output)
            assert match is not None, output
            counts[name] = int(match.group(1))
        loaded = {name: _dump(pid, outs[name], keep) for name, pid in pids.items()}
        window = time.monotonic() - zeroed
        # What the process does with no request (timers, the event loop's ticks), per second, taken off the loaded
        # window: the two servers answer at different rates, so per request it would not cancel out.
        for pid in pids.values():
            _control("-z", pid)
        zeroed = time.monotonic()
        await asyncio.sleep(idle)
        idle_totals = {name: _dump(pid, outs[name], None) for name, pid in pids.items()}
        idle_window = time.monotonic() - zeroed
        result = {}
        for name in servers:
            idle_rate = idle_totals[name] / idle_window
            result[name] = (loaded[name] - idle_rate * window) / counts[name]
            sys.stdout.write(
                f"{name}: {counts[name]} requests in {window:.1f} s, idle {idle_rate:,.0f} instructions/s, "
                f"{result[name]:,.0f} instructions per request\n"
            )
        sys.stdout.write(f"on/off: {result['on'] / result['off']:.4f}x\n")
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--idle", type=float, default=10)
    parser.add_argument("--keep", type=Path, help="copy the loaded dumps here (callgrind-on.out, callgrind-off.out)")
    args = parser.parse_args()
    asyncio.run(measure(args.duration, args.warmup, args.idle, args.keep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
