"""A small HTTP forward proxy on loopback, as an egress proxy in a corporate network would be: ``CONNECT`` tunnels
(RFC 9110 9.3.6) and absolute-form requests (RFC 9112 3.2.2), optional Basic credentials (407 without them), and
a host map so an upstream's name (``upstream.test``) need not resolve anywhere but here.

It runs its own event loop in a thread, so that synchronous tests (bff behind uvicorn in a thread) and async tests
alike can use it. It records what it saw (request lines, whether credentials came) but never echoes a header back.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

PROXY_REQUIRED = (
    b'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="egress"\r\n'
    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
)


@dataclass
class ForwardProxyLog:
    #: ``CONNECT host:port`` or ``GET http://host:port/path``, one per request the proxy received.
    requests: list[str] = field(default_factory=list)
    #: Per request: whether it carried the expected ``Proxy-Authorization``.
    authorized: list[bool] = field(default_factory=list)
    #: The request heads forwarded upstream (absolute-form requests only).
    forwarded: list[bytes] = field(default_factory=list)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


class _Proxy:
    def __init__(self, hosts: dict[str, str], credentials: tuple[str, str] | None, log: ForwardProxyLog) -> None:
        self.hosts = hosts
        self.expected = (
            None if credentials is None else "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
        )
        self.log = log

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line, *lines = head.decode("latin-1").split("\r\n")
            method, target, _ = line.split(" ")
            fields = [(n.strip().lower(), v.strip()) for n, _, v in (f.partition(":") for f in lines if f)]
            authorization = dict(fields).get("proxy-authorization")
            self.log.requests.append(f"{method} {target}")
            self.log.authorized.append(self.expected is not None and authorization == self.expected)
            if self.expected is not None and authorization != self.expected:
                writer.write(PROXY_REQUIRED)
                await writer.drain()
                return
            if method == "CONNECT":
                await self._tunnel(target, reader, writer)
            else:
                await self._forward(method, target, fields, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    async def _tunnel(self, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, _, port = target.rpartition(":")
        host = host.strip("[]")
        up_reader, up_writer = await asyncio.open_connection(self.hosts.get(host, host), int(port))
        try:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()

    async def _forward(
        self,
        method: str,
        target: str,
        fields: list[tuple[str, str]],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """One absolute-form request, sent on in origin form without the proxy's own fields; the answer relayed
        until the upstream closes (``Connection: close`` upstream)."""
        url = urlsplit(target)
        host = url.hostname or ""
        up_reader, up_writer = await asyncio.open_connection(self.hosts.get(host, host), url.port or 80)
        kept = [(n, v) for n, v in fields if not n.startswith("proxy-") and n != "connection"]
        length = int(dict(kept).get("content-length", "0"))
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in kept) + "connection: close\r\n\r\n"
        self.log.forwarded.append(head.encode("latin-1"))
        try:
            up_writer.write(head.encode("latin-1") + (await reader.readexactly(length) if length else b""))
            await up_writer.drain()
            await _pipe(up_reader, writer)
        finally:
            up_writer.close()


@contextlib.contextmanager
def forward_proxy(
    *, hosts: dict[str, str] | None = None, credentials: tuple[str, str] | None = None
) -> Iterator[tuple[int, ForwardProxyLog]]:
    """Run a forward proxy on 127.0.0.1 (a free port) in a thread; yields its port and its log."""
    log = ForwardProxyLog()
    proxy = _Proxy(hosts or {}, credentials, log)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop: asyncio.Event | None = None
    port = 0

    async def main() -> None:
        nonlocal stop, port
        stop = asyncio.Event()
        server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        started.set()
        async with server:
            await stop.wait()
            server.close()
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("the forward proxy did not start")
    try:
        yield port, log
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
