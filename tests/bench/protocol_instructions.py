"""``python -m tests.bench.protocol_instructions``: CPU instructions per request of bff's HTTP/1.1 protocol with the
edge limits on (``CoalescingHttpToolsProtocol``, as served) and off (``tests.bench.limits_off.LimitsOffProtocol``).

The paired "limits on vs off" row (``tests/bench/limits.py``) cannot resolve a difference this small on a shared
machine; instruction counts can. One keep-alive connection, on uvloop as under ``bff serve``, is fed the same
request again and again (``data_received`` of the whole head, the app's answer written through the coalescing
transport to a transport that drops it) under ``valgrind --tool=callgrind``, LOW and HIGH times; the difference
over HIGH - LOW is the count per request, start-up cancelled out. The app is a minimal ASGI app (200 and the
benchmark upstream's 316 bytes): the count is the protocol's and uvicorn's, not bff's data plane.
Needs ``valgrind``.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from typing import Any

import uvicorn
import uvloop
from uvicorn.server import ServerState

from bff.config import ServerSettings
from bff.serving import CoalescingHttpToolsProtocol
from bff.serving.limits import EdgeLimits
from bff.types import Receive, Scope, Send
from tests.bench.callgrind import per_request
from tests.bench.limits_off import LimitsOffProtocol

LOW, HIGH = 1000, 3000
PROTOCOLS = {"limits on": CoalescingHttpToolsProtocol, "limits off": LimitsOffProtocol}
#: A browser's API call as the benchmark sends it (the cookie's value is opaque here).
REQUEST = (
    b"GET /api/orders/7 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nX-CSRF: 1\r\n"
    b"Cookie: __Host-bff=" + b"x" * 120 + b"\r\nAccept: */*\r\nUser-Agent: bench\r\n\r\n"
)
BODY = b"{" + b'"x":1,' * 52 + b'"y":1}'


async def answer(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": BODY})


class _DroppingTransport:
    """A connected transport whose writes go nowhere (the counts are the server side's)."""

    def __init__(self) -> None:
        self.written = 0
        self._extra: dict[str, Any] = {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


def _loop(name: str, count: int) -> None:
    loop = uvloop.new_event_loop()
    config = uvicorn.Config(
        answer, lifespan="off", access_log=False, log_level="warning", server_header=False, proxy_headers=False
    )
    config.load()
    factory = functools.partial(PROTOCOLS[name], limits=EdgeLimits.of(ServerSettings()))
    protocol = factory(config, ServerState(), {}, loop)
    transport = _DroppingTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]

    async def requests() -> None:  # one run of the loop: each run_until_complete would cost a socketpair
        for _ in range(count):
            protocol.data_received(REQUEST)
            while protocol.tasks or protocol.transport.get_write_buffer_size():  # noqa: ASYNC110 - answered, then flushed
                await asyncio.sleep(0)

    loop.run_until_complete(requests())
    if transport.written < count * len(BODY):
        raise RuntimeError(f"{name}: {transport.written} bytes answered to {count} requests")
    protocol.connection_lost(None)
    loop.close()


def main(argv: list[str]) -> int:
    counts = per_request(argv, "tests.bench.protocol_instructions", _loop, list(PROTOCOLS), LOW, HIGH)
    if counts:
        on, off = counts["limits on"], counts["limits off"]
        sys.stdout.write(f"{'difference':<20} {on - off:>8,.0f} ({on / off:.3f}x)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
