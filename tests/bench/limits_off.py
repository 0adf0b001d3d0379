"""``python -m tests.bench.limits_off serve --config FILE ...``: ``bff serve`` with the edge limits' checks off, for
the benchmark's paired "limits on vs off" row (``tests/bench/limits.py``) and nothing else.

The served protocol is :class:`LimitsOffProtocol`: bff's :class:`CoalescingHttpToolsProtocol` (write coalescing,
llhttp's refusal of malformed requests, the graceful shutdown, the connection count) without what its
``EdgeLimits`` cost per request: no head bytes counted, no header-field count, no head, body or keep-alive deadline
(no timer, no clock read). Everything else is the real CLI, config and app, unchanged.

It cannot be switched on in production: it lives under ``tests/``, which the ``bff`` distribution does not ship
(``[tool.setuptools.packages.find]`` includes ``bff`` only), and nothing in ``bff`` reads a switch for it; the only
way in is this launcher replacing ``bff.serving.uvicorn_settings`` in its own process, as ``tests.faults.launch``
replaces the loop.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bff import serving
from bff.cli import main
from bff.config import ServerSettings
from bff.serving import uvicorn_settings
from bff.serving.httptools_protocol import CoalescingHttpToolsProtocol
from bff.serving.limits import EdgeLimits


class LimitsOffProtocol(CoalescingHttpToolsProtocol):
    """bff's protocol with the per-request checks of the edge limits left out (see the module docstring)."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if self._deadline is not None:  # the first head's deadline: no deadline here
            self._deadline.cancel()
            self._deadline = None

    def data_received(self, data: bytes) -> None:
        self._feed(data)  # no head room counted, no body deadline armed

    def on_message_begin(self) -> None:
        HttpToolsProtocol.on_message_begin(self)

    def on_headers_complete(self) -> None:
        HttpToolsProtocol.on_headers_complete(self)
        if getattr(self.server_state, "closing", False):  # the drain's Connection: close is not a limit: kept
            self.cycle.keep_alive = False

    def on_message_complete(self) -> None:
        HttpToolsProtocol.on_message_complete(self)

    def on_response_complete(self) -> None:
        # bff's, less the idle deadline (and uvicorn's keep-alive timer, which bff's replaces).
        self.server_state.total_requests += 1
        if not self.transport.is_closing():
            self.flow.resume_reading()
            if self.pipeline:
                self._start_asgi_task(*self.pipeline.pop())


def limits_off_settings(server: ServerSettings) -> dict[str, Any]:
    """``bff serve``'s uvicorn settings with :class:`LimitsOffProtocol` as the protocol."""
    return {**uvicorn_settings(server), "http": functools.partial(LimitsOffProtocol, limits=EdgeLimits.of(server))}


if __name__ == "__main__":
    serving.uvicorn_settings = limits_off_settings  # read by bff.cli at `serve`
    sys.exit(main(sys.argv[1:]))
