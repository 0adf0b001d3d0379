"""The WebSocket echo part of a run: bff with a ``websocket = true`` route to the echo upstream
(``websocket_echo.py``, kept free of this run's context: it is the upstream's own process too)."""

from __future__ import annotations

import contextlib

from tests.bench.context import ROOT, Context, logged_in_bff
from tests.bench.report import Outcome
from tests.bench.servers import COOKIE_NAME
from tests.bench.system import free_port
from tests.bench.websocket_echo import WS_PATH, EchoResult, echo_route, run_echo, start_echo_upstream


async def measure(ctx: Context, stack: contextlib.ExitStack) -> EchoResult:
    """bff with a ``websocket = true`` route to an echo upstream (on the load cores), loaded from this process."""
    port = free_port()
    stack.callback(start_echo_upstream(port, list(ctx.plan.load), ctx.plan, ctx.workdir).stop)
    async with logged_in_bff(ctx, "bff-websocket", workers=1, source=ROOT, extra=echo_route(port)) as bff:
        return await run_echo(
            "ws" + bff.url.removeprefix("http") + WS_PATH,
            origin=bff.url,
            cookie=f"{COOKIE_NAME}={bff.cookie}",
            pid=bff.process.pid,
            duration=ctx.mode.duration,
        )


def outcome(echo: EchoResult) -> Outcome:
    return Outcome(
        "WebSocket echo: every message came back unchanged",
        f"{echo.messages:,} messages, {echo.errors} errors",
        echo.errors == 0 and echo.messages > 0,
        "check",
    )
