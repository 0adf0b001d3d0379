"""A real upstream for the proxy tests: it echoes what it received and serves the answers a proxy must relay.

Raw ASGI, so that it sees (and echoes) the request exactly: the raw path, the raw query and every header line.
It runs in its own thread (``tests.support.servers.serve``); what the tests need to observe is in
:class:`EchoState`, whose ``threading.Event`` s cross the thread boundary.

Paths (anything else is the echo):

- ``/cookie``: 200 with ``Set-Cookie``/``Set-Cookie2``, hop-by-hop and ``Connection``-named headers among kept ones;
- ``/sse?n=N&interval=S&gated=1``: ``text/event-stream``, N events ``data: i``; between events it sleeps S seconds,
  or with ``gated`` waits for the test to call ``state.gate(i)``; ``state.sse_closed`` is set when the
  connection is closed before the last event;
- ``/download?mib=N&length=1``: N MiB in 64 KiB chunks (with Content-Length when ``length=1``);
- ``/slow?delay=S``: answers after S seconds; ``state.slow_abandoned`` is set if the caller leaves first;
- ``/protected``: 401 ``WWW-Authenticate: Bearer error="invalid_token"`` (just ``401`` with ``plain=1``; the
  ``WWW-Authenticate`` fields given as ``challenge=...`` parameters instead, with ``challenge=...``) unless the
  bearer token is ``fresh``, then the echo;
- ``/gzip``: ``GZIP_BODY`` with ``Content-Encoding: gzip``;
- ``/truncated``: sends ``TRUNCATED`` (chunked) and closes the connection without the last chunk;
- ``/status/CODE``: that status with a small body of the upstream's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from bff.types import Message, Receive, Scope, Send

CHUNK = bytes(range(256)) * 256  # 64 KiB
TRUNCATED = b"only this "
GZIP_BODY = gzip.compress(b"compressed by the upstream " * 100)
FRESH_TOKEN = "fresh"


@dataclass
class Seen:
    method: str
    raw_path: str
    authorization: str | None
    body_sha256: str | None = None


@dataclass
class EchoState:
    #: One entry per request the upstream received (appended when its headers arrive).
    seen: list[Seen] = field(default_factory=list)
    #: Request bodies the echo read to the end.
    bodies_completed: int = 0
    upload_aborted: threading.Event = field(default_factory=threading.Event)
    sse_closed: threading.Event = field(default_factory=threading.Event)
    slow_abandoned: threading.Event = field(default_factory=threading.Event)
    gates: dict[int, threading.Event] = field(default_factory=dict)

    def gate(self, i: int) -> threading.Event:
        return self.gates.setdefault(i, threading.Event())

    def reset(self) -> None:
        self.seen.clear()
        self.bodies_completed = 0
        for event in (self.upload_aborted, self.sse_closed, self.slow_abandoned, *self.gates.values()):
            event.clear()


class _Disconnected(Exception):
    pass


def _query(scope: Scope) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()}


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _json(send: Send, status: int, payload: object, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(payload).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive, state: EchoState) -> tuple[str, int]:
    """Hash the body as it streams in (never held whole: the 50 MiB tests measure the proxy, not us)."""
    digest = hashlib.sha256()
    length = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            state.upload_aborted.set()
            raise _Disconnected
        digest.update(message.get("body", b""))
        length += len(message.get("body", b""))
        more = message.get("more_body", False)
    state.bodies_completed += 1
    return digest.hexdigest(), length


async def _until_disconnect(receive: Receive) -> None:
    message: Message = {"type": ""}
    while message["type"] != "http.disconnect":
        message = await receive()


async def _race_disconnect(receive: Receive, work: Awaitable[None]) -> bool:
    """Run ``work`` until done or until the caller disconnects; True if it disconnected first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_until_disconnect(receive))
    await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    # uvicorn also reports "disconnect" once a response is complete, so only unfinished work counts as abandoned.
    abandoned = not task.done()
    for pending in (task, watcher):
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pending
    return abandoned


class EchoUpstream:
    def __init__(self, state: EchoState) -> None:
        self.state = state
        self._handlers: dict[str, Callable[[Scope, Receive, Send, Seen], Awaitable[None]]] = {
            "/cookie": self._cookie,
            "/sse": self._sse,
            "/download": self._download,
            "/slow": self._slow,
            "/protected": self._protected,
            "/gzip": self._gzip,
            "/truncated": self._truncated,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        raw_path = scope["raw_path"].decode("latin-1")
        seen = Seen(scope["method"], raw_path, _header(scope, b"authorization"))
        self.state.seen.append(seen)
        handler = self._handlers.get(scope["path"])
        try:
            if handler is not None:
                await handler(scope, receive, send, seen)
            elif scope["path"].startswith("/status/"):
                code = int(scope["path"].removeprefix("/status/"))
                await _json(send, code, {"upstream_status": code}, [(b"x-upstream", b"yes")])
            else:
                await self._echo(scope, receive, send, seen)
        except _Disconnected:
            pass

    async def _echo(self, scope: Scope, receive: Receive, send: Send, seen: Seen) -> None:
        digest, length = await _read_body(receive, self.state)
        seen.body_sha256 = digest
        headers = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
        payload = {
            "method": scope["method"],
            "raw_path": scope["raw_path"].decode("latin-1"),
            "query_string": scope["query_string"].decode("latin-1"),
            "headers": headers,
            "body_sha256": digest,
            "body_length": length,
        }
        await _json(send, 200, payload, [(b"x-upstream", b"yes")])

    async def _cookie(self, scope: Scope, receive: Receive, send: Send, seen: Seen) -> None:
        await _json(
            send,
            200,
            {"cookie": "set"},
            [
                (b"set-cookie", b"upstream_session=secret; Path=/; HttpOnly"),
                (b"Set-Cookie", b"other=1"),
                (b"set-cookie2", b"legacy=1"),
                (b"cache-control", b"private, max-age=60"),
                (b"etag", b'"v1"'),
                (b"www-authenticate", b'Bearer realm="api"'),
                (b"server", b"echo-upstream/1.0"),
                (b"keep-alive", b"timeout=5"),
                (b"connection", b"x-hop-secret"),
                (b"x-hop-secret", b"hidden"),
                (b"x-kept", b"kept"),
            ],
        )

    async def _sse(self, scope: Scope, receive: Receive, send: Send, seen: Seen) -> None:
        query = _query(scope)
        n, interval, gated = int(query.get("n", "3")), float(query.get("interval", "0")), "gated" in query
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})

        async def emit() -> None:
            for i in range(n):
                if i and gated:
                    for _ in range(2000):  # at most 10 s, so a failing test cannot hang the suite
                        if self.state.gate(i).is_set():
                            break
                        await asyncio.sleep(0.005)
                elif i:
                    await asyncio.sleep(interval)
                await send({"type": "http.response.body", "body": f"data: {i}\n\n".encode(), "more_body": True})
            await send({"type": "http.response.body", "body": b""})

        if await _race_disconnect(receive, emit()):
            self.state.sse_closed.set()

    async def _download(self, scope: Scope, receive: Receive, send: Send, seen: Seen) -> None:
        query = _query(scope)
        mib = int(query.get("mib", "1"))
        headers = [(b"content-type", b"application/octet-stream")]
        if query.get("length") == "1":
            headers.append((b"content-length", str(mib * 1024 * 1024).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for _ in range(mib * 16):
            await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def _slow(self, scope: Scope, receive: Receive, send: Send, seen: Seen) -> None:
        delay = float(_query(scope).get("delay", "1"))
        if await _race_disconnect(receive, asyncio.sleep(delay)):
            self.state.slow_abandoned.set()
            return
        await _json(send, 200, {"slow": delay})

    async def _protected(self, scope: Scope, receive: Receive, send: Send, seen: Seen) -> None:
        if seen.authorization == f"Bearer {FRESH_TOKEN}":
            await self._echo(scope, receive, send, seen)
            return
        seen.body_sha256, _ = await _read_body(receive, self.state)
        given = parse_qs(scope["query_string"].decode("latin-1")).get("challenge")
        challenge = (
            []
            if "plain" in _query(scope)
            else [(b"www-authenticate", v.encode("latin-1")) for v in given]
            if given
            else [(b"www-authenticate", b'Bearer realm="api", error="invalid_token", error_description="expired"')]
        )
        await _json(send, 401, {"upstream": "token rejected"}, challenge)

    async def _gzip(self, scope: Scope, receive: Receive, send: Send, seen: Seen) -> None:
        headers = [
            (b"content-type", b"text/plain"),
            (b"content-encoding", b"gzip"),
            (b"content-length", str(len(GZIP_BODY)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": GZIP_BODY})

    async def _truncated(self, scope: Scope, receive: Receive, send: Send, seen: Seen) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": TRUNCATED, "more_body": True})
        # Returning now makes uvicorn close the connection mid-body (it logs an error: expected here).
