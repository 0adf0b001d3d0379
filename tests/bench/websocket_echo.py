"""The WebSocket echo row: messages per second and bff's CPU per message through a ``websocket = true`` route.

An echo upstream (the ``websockets`` server, a process of its own on the load cores: ``python -m
tests.bench.websocket_echo PORT``) answers every message with itself. The load is this process: ``connections``
WebSockets through bff, each keeping ``window`` messages of ``payload`` bytes in flight (send them, read their
echoes, check each came back unchanged), for ``duration`` seconds. A message counts once per round trip (browser ->
bff -> upstream -> bff -> browser: two relays by bff); CPU per message is bff's process tree's utime+stime delta
over the run divided by the messages.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from tests.bench.system import CpuPlan, Process, cpu_seconds, pinned, process_tree, wait_for_port

#: The route the bench's bff relays to the echo upstream.
WS_PATH = "/ws/echo"


def echo_route(port: int) -> str:
    """The ``[[routes]]`` table to append to a bench config: ``/ws`` -> the echo upstream, WebSockets on."""
    return f"""
[[routes]]
path = "/ws"
upstream = "http://127.0.0.1:{port}"
websocket = true
max_message = "64KiB"
"""


@dataclass(frozen=True)
class EchoResult:
    connections: int
    window: int
    payload: int
    messages: int
    seconds: float
    cpu_seconds: float
    #: Echoes that came back different from what was sent, or sockets that failed.
    errors: int

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_message(self) -> float:
        return self.cpu_seconds / self.messages * 1e6 if self.messages else 0.0

    def describe(self) -> str:
        return (
            f"WebSocket echo through bff, 1 worker ({self.connections} sockets, {self.window} messages of "
            f"{self.payload} B in flight on each, {self.seconds:.0f} s): {self.per_second:,.0f} messages/s, "
            f"{self.cpu_us_per_message:.0f} µs CPU/message (each message relayed twice: there and back)"
        )


def start_echo_upstream(port: int, cores: list[int], plan: CpuPlan, workdir: Path) -> Process:
    command = pinned([sys.executable, "-m", "tests.bench.websocket_echo", str(port)], cores, plan)
    root = str(Path(__file__).resolve().parents[2])
    process = Process("websocket-echo", command, workdir / "websocket-echo.log", env=os.environ, cwd=root)
    wait_for_port(port, process)
    return process


async def run_echo(
    url: str, *, origin: str, cookie: str, pid: int, duration: float, connections: int = 16, window: int = 8,
    payload: int = 64,
) -> EchoResult:  # fmt: skip
    message = "m" * payload
    counts = [0] * connections
    errors = 0
    headers = {"cookie": cookie}

    async def one(i: int, deadline: float) -> None:
        nonlocal errors
        try:
            async with connect(url, origin=origin, additional_headers=headers, compression=None) as ws:  # type: ignore[arg-type]
                while time.monotonic() < deadline:
                    for _ in range(window):
                        await ws.send(message)
                    for _ in range(window):
                        if await ws.recv() != message:
                            errors += 1
                    counts[i] += window
        except Exception:  # noqa: BLE001 - counted: the check reports it
            errors += 1

    await asyncio.gather(*(one(i, time.monotonic() + 0.5) for i in range(connections)))  # warm-up
    counts[:] = [0] * connections
    tree = process_tree(pid)
    cpu_before = cpu_seconds(tree)
    started = time.monotonic()
    await asyncio.gather(*(one(i, started + duration) for i in range(connections)))
    seconds = time.monotonic() - started
    cpu = cpu_seconds(tree) - cpu_before
    return EchoResult(connections, window, payload, sum(counts), seconds, cpu, errors)


async def _serve(port: int) -> None:
    async def echo(connection: ServerConnection) -> None:
        async for message in connection:
            await connection.send(message)

    async with serve(echo, "127.0.0.1", port, compression=None, max_size=2**20):
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1])))
