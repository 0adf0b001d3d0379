"""Graceful shutdown of real ``bff serve`` processes (with and without ``--workers``), against a real Redis, the test
OpenID Provider and an upstream on loopback.

On SIGTERM: ``/readyz`` turns 503 at once while new connections and requests are still served for ``drain_delay``;
then the listener closes (a new connection is refused, never left hanging), idle keep-alive connections close, and
requests in flight get ``shutdown_timeout`` to finish (their answer says ``Connection: close``); a stream still open
at that deadline is cut (the browser sees a truncated body, no hang); a refresh in flight is saved, or its lock is
released, so the session keeps working from another instance; the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.typing import Origin

from bff.config import load_config
from bff.session.manager import SessionManager
from bff.session.redis_store import RedisStore
from bff.types import Receive, Scope, Send
from tests.support.bff_process import configure, expire_session_token, log_in, start_bff, wait_ready
from tests.support.dev_server import DevServer, DevServerState
from tests.support.leak_guard import fingerprint
from tests.support.oidc_provider import TestProvider
from tests.support.redis_server import RedisProcess
from tests.support.servers import free_port, serve

XHR = {"X-CSRF": "1"}
#: Seconds beyond drain_delay + shutdown_timeout within which a stopping process must be gone (the lifespan's own
#: shutdown and a loaded machine's scheduling).
BOUND = 5.0
#: How long a test waits for something that must happen (a failure, or a hang, waits this long).
PATIENCE = 10.0


@dataclass
class Upstream:
    """An API that answers ``/slow`` only once released, streams server-sent events on ``/events`` until the client
    leaves, and answers anything else ``200 ok``. Echoes no token."""

    url: str = ""
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if path.endswith("/slow"):
            self.arrived.set()
            await asyncio.to_thread(self.release.wait, 30)
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"slow answer"})
        elif path.endswith("/events"):
            await self._events(receive, send)
        else:
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"ok"})

    async def _events(self, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        left = asyncio.ensure_future(receive())  # the body (none), then the disconnect
        for n in range(1200):  # a minute at most: the test's own bound ends it long before
            if left.done() and left.result()["type"] == "http.disconnect":
                return
            if left.done():
                left = asyncio.ensure_future(receive())
            await send({"type": "http.response.body", "body": f"data: {n}\n\n".encode(), "more_body": True})
            await asyncio.sleep(0.05)
        left.cancel()
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    api = Upstream()
    with serve(api, lifespan="off") as url:
        api.url = url
        yield api
    api.release.set()


@dataclass
class Bff:
    process: subprocess.Popen[bytes]
    port: int
    config: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def exit_status(self, within: float) -> int:
        try:
            return self.process.wait(within)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(PATIENCE)
            pytest.fail(f"bff still running {within:g}s after SIGTERM:\n{self.log.read_text()[-3000:]}")


@dataclass
class Launcher:
    """Starts ``bff serve`` processes on the test's Redis, IdP and upstream; kills those still running at the end."""

    tmp_path: Path
    redis_process: RedisProcess
    provider: TestProvider
    upstream: Upstream
    started: list[Bff] = field(default_factory=list)

    def __call__(
        self,
        *,
        drain_delay: str = "0s",
        shutdown_timeout: str = "2s",
        workers: int = 1,
        extra: str = "",
        listen: int | None = None,
        ready: bool = True,
    ) -> Bff:
        """``extra``: TOML appended to the config; ``listen``: serve on this port (``--listen``), not the config's;
        ``ready``: wait until ``/readyz`` answers 200."""
        configured = free_port()
        name = f"bff{len(self.started)}"
        config, log = self.tmp_path / f"{name}.toml", self.tmp_path / f"{name}.log"
        configure(
            config,
            configured,
            redis_url=self.redis_process.url,
            provider=self.provider,
            upstream=self.upstream.url,
            extra=extra,
            drain_delay=drain_delay,
            shutdown_timeout=shutdown_timeout,
        )
        args = ["--workers", str(workers)] if workers > 1 else []
        port = configured if listen is None else listen
        if listen is not None:
            args += ["--listen", f"127.0.0.1:{listen}"]
        bff = Bff(start_bff(config, port, log, *args), port, config, log)
        self.started.append(bff)
        if ready:
            wait_ready(port, bff.process, log)
        return bff

    async def logged_in(self, **options: Any) -> tuple[Bff, dict[str, str]]:
        """A ready bff (``options``: as for a call) and the headers of an API call in a session logged in there."""
        bff = self(**options)
        return bff, {**XHR, "cookie": f"__Host-bff={await log_in(bff.port)}"}


@pytest.fixture
def launch(tmp_path: Path, redis_process: RedisProcess, idp: TestProvider, upstream: Upstream) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path, redis_process, idp, upstream)
    yield launcher
    for bff in launcher.started:
        if bff.process.poll() is None:
            bff.process.kill()
            bff.process.wait(PATIENCE)


async def fresh_get(url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """One request on a new connection (a client of its own: no pooled connection is reused)."""
    async with httpx.AsyncClient(timeout=PATIENCE) as http:
        return await http.get(url, headers=headers)


async def until_refused(bff: Bff) -> list[int]:
    """New connections until one is refused; the statuses of those served meanwhile. A connection that is accepted
    and then never answered fails the test: a client must be served or refused, never left hanging."""
    statuses: list[int] = []
    async with asyncio.timeout(PATIENCE * 2):
        while True:
            try:
                statuses.append((await fresh_get(f"{bff.url}/healthz")).status_code)
            except httpx.ConnectError:
                return statuses
            except httpx.TimeoutException:
                pytest.fail(f"a connection opened during the shutdown hung:\n{bff.log.read_text()[-3000:]}")
            except (httpx.ReadError, httpx.RemoteProtocolError):
                return statuses  # accepted by the kernel as the last listener closed, then reset: refused
            await asyncio.sleep(0.02)


async def refresh_started(provider: TestProvider) -> None:
    """Until the IdP has received a refresh token grant."""
    async with asyncio.timeout(PATIENCE):
        while not any(form.get("grant_type") == "refresh_token" for form in provider.token_requests):  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def idle_keep_alive_connection(bff: Bff) -> socket.socket:
    """A connection that had one answer and stays open, idle."""
    sock = socket.create_connection(("127.0.0.1", bff.port), timeout=PATIENCE)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
        answer += sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 200 ")
    return sock


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
async def test_sigterm_drains_then_refuses_and_lets_requests_in_flight_finish(
    upstream: Upstream, launch: Launcher, workers: int
) -> None:
    drain, grace = 2.0, 8.0
    bff, api = await launch.logged_in(drain_delay=f"{drain:g}s", shutdown_timeout=f"{grace:g}s", workers=workers)
    async with httpx.AsyncClient(timeout=PATIENCE * 3) as http:
        in_flight = asyncio.ensure_future(http.get(f"{bff.url}/api/slow", headers=api))
        assert await asyncio.to_thread(upstream.arrived.wait, PATIENCE)
        idle = idle_keep_alive_connection(bff)
        try:
            bff.stop()
            ready = await fresh_get(f"{bff.url}/readyz")
            if workers > 1:  # the supervisor forwards the signal: the workers see it a moment later
                async with asyncio.timeout(PATIENCE):
                    while ready.status_code == 200:
                        ready = await fresh_get(f"{bff.url}/readyz")
            assert ready.status_code == 503, ready.text
            assert ready.json()["error"] == "not_ready"
            # Still serving during the drain: the load balancer may not have noticed yet.
            assert (await fresh_get(f"{bff.url}/healthz")).status_code == 200
            served = await fresh_get(f"{bff.url}/api/items", headers=api)
            assert (served.status_code, served.text) == (200, "ok")
            assert (await fresh_get(f"{bff.url}/readyz")).status_code == 503
            # A client that connected during the drain but sends its request only as the listener closes.
            early = socket.create_connection(("127.0.0.1", bff.port), timeout=PATIENCE)
            await asyncio.sleep(0.1)  # accepted by a worker, which must not close it under the client

            assert not in_flight.done()
            await until_refused(bff)
            early.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer_head = early.recv(4096).split(b"\r\n\r\n")[0].lower()
            early.close()
            assert answer_head.startswith(b"http/1.1 200 "), answer_head
            assert b"\r\nconnection: close" in answer_head
            idle.settimeout(PATIENCE)
            with contextlib.suppress(ConnectionResetError):
                assert idle.recv(1) == b""  # the idle keep-alive connection was closed by bff
        finally:
            idle.close()

        assert not in_flight.done()
        upstream.release.set()
        answer = await in_flight
        assert (answer.status_code, answer.text) == (200, "slow answer")
        assert answer.headers["connection"] == "close"
    assert bff.exit_status(within=grace + BOUND) == 0, bff.log.read_text()[-3000:]


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
async def test_an_event_stream_through_the_proxy_is_cut_at_the_deadline_and_bff_exits_0(
    launch: Launcher, workers: int
) -> None:
    drain, grace = 0.5, 1.5
    bff, api = await launch.logged_in(drain_delay=f"{drain:g}s", shutdown_timeout=f"{grace:g}s", workers=workers)
    seen = {"before": 0, "after": 0}

    async def read_until_the_end(stream: httpx.Response) -> None:
        async with asyncio.timeout(drain + grace + BOUND):  # never a hang
            async for line in stream.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if seen["before"] < 3:
                    seen["before"] += 1
                    if seen["before"] == 3:
                        bff.stop()
                else:
                    seen["after"] += 1

    async with (
        httpx.AsyncClient(timeout=PATIENCE) as http,
        http.stream("GET", f"{bff.url}/api/events", headers=api) as stream,
    ):
        assert stream.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):  # the body ends without its last chunk: truncated
            await read_until_the_end(stream)
    assert seen["after"] > 0  # the stream went on through the drain ...
    assert bff.exit_status(within=BOUND) == 0, bff.log.read_text()[-3000:]  # ... and the process ended with it


@pytest.mark.parametrize("request_waits", [True, False], ids=["its-request-waiting", "its-request-gone"])
async def test_a_refresh_in_flight_at_sigterm_is_not_lost(
    redis_process: RedisProcess, idp: TestProvider, launch: Launcher, request_waits: bool
) -> None:
    """Two instances on one Redis; the IdP takes 1.5 s to answer a refresh that the first instance started when it
    is told to stop. The refresh completes and is saved: the second instance serves the session with the new token,
    and the IdP saw one refresh and no reuse."""
    stopping, other = (launch(drain_delay="0.2s", shutdown_timeout="5s") for _ in range(2))
    cookie = await log_in(stopping.port)
    old_token = await expire_session_token(redis_process.url, stopping.config, cookie)
    idp.token_delay = 1.5
    api = {**XHR, "cookie": f"__Host-bff={cookie}"}

    async with httpx.AsyncClient(timeout=PATIENCE if request_waits else 0.3) as http:
        request = asyncio.ensure_future(http.get(f"{stopping.url}/api/items", headers=api))
        await refresh_started(idp)
        if not request_waits:
            with pytest.raises(httpx.TimeoutException):
                await request  # the browser left; the refresh goes on without it
        stopping.stop()
        if request_waits:
            answer = await request
            assert (answer.status_code, answer.text) == (200, "ok")
    assert stopping.exit_status(within=5 + BOUND) == 0, stopping.log.read_text()[-3000:]

    answer = await fresh_get(f"{other.url}/api/items", headers=api)
    assert (answer.status_code, answer.text) == (200, "ok")
    assert idp.refresh_calls == 1
    assert idp.reuse_detected == 0
    store = RedisStore.from_url(redis_process.url)
    try:
        sessions = SessionManager(store, load_config(stopping.config).session)
        session_id = sessions.session_id_from_cookie(cookie)
        assert session_id is not None
        loaded = await sessions.load_key(sessions.key_for(session_id))
        assert loaded is not None
        assert fingerprint(loaded.session.tokens.access_token) != fingerprint(old_token)
        assert await store.ttl(sessions.refresh_lock_key(sessions.key_for(session_id))) is None
    finally:
        await store.aclose()


async def test_a_refresh_slower_than_the_shutdown_timeout_is_cancelled_and_its_lock_released(
    redis_process: RedisProcess, idp: TestProvider, launch: Launcher
) -> None:
    """The IdP takes longer than ``shutdown_timeout`` to answer a refresh whose request has left: bff does not wait
    past its deadline, and the refresh lock is released as the refresh is cancelled, not left to its 5 s lease, so
    that another instance may refresh at once."""
    bff = launch(drain_delay="0.1s", shutdown_timeout="0.5s")
    cookie = await log_in(bff.port)
    await expire_session_token(redis_process.url, bff.config, cookie)
    idp.token_delay = 4.0
    async with httpx.AsyncClient(timeout=0.3) as http:
        request = asyncio.ensure_future(
            http.get(f"{bff.url}/api/items", headers={**XHR, "cookie": f"__Host-bff={cookie}"})
        )
        await refresh_started(idp)
        with pytest.raises(httpx.TimeoutException):
            await request
    store = RedisStore.from_url(redis_process.url)
    try:
        sessions = SessionManager(store, load_config(bff.config).session)
        session_id = sessions.session_id_from_cookie(cookie)
        assert session_id is not None
        lock_key = sessions.refresh_lock_key(sessions.key_for(session_id))
        assert await store.ttl(lock_key) is not None  # held while the IdP takes its time
        bff.stop()
        assert bff.exit_status(within=0.6 + BOUND) == 0, bff.log.read_text()[-3000:]
        assert idp.refresh_calls == 0  # bff stopped before the IdP answered ...
        assert await store.ttl(lock_key) is None  # ... and released the lock on its way out
    finally:
        await store.aclose()


async def test_serve_listen_overrides_the_config_and_a_drain_of_0s_stops_at_once(launch: Launcher) -> None:
    bff = launch(listen=free_port())
    configured = tomllib.loads(bff.config.read_text())["server"]["listen"]
    with pytest.raises(httpx.ConnectError):
        await fresh_get(f"http://{configured}/healthz")
    bff.stop()
    assert bff.exit_status(within=BOUND) == 0, bff.log.read_text()[-3000:]


async def echo_until_closed(ws: websockets.ClientConnection, within: float) -> None:
    async with asyncio.timeout(within):  # never a hang
        while True:
            await ws.send("ping")
            await ws.recv()
            await asyncio.sleep(0.05)


async def test_a_dev_server_websocket_outlives_the_listener_and_is_closed_1012_at_the_deadline(
    launch: Launcher,
) -> None:
    """The frontend dev server's hot-reload WebSocket, relayed by bff: it keeps working after the listener closed
    (requests in flight are not the only work a deadline protects), and at ``shutdown_timeout`` it is closed with
    1012 "service restart" (RFC 6455 7.4.1), which tells the page to reconnect, and bff exits 0."""
    state = DevServerState()
    with serve(DevServer(state), lifespan="off") as dev_server:
        frontend = f'[frontend]\ndev_server = "{dev_server}"'
        bff = launch(drain_delay="0.2s", shutdown_timeout="1.5s", extra=frontend)
        port, log = bff.port, bff.log
        async with websockets.connect(
            f"ws://127.0.0.1:{port}/@vite/client", origin=Origin(bff.url), open_timeout=PATIENCE
        ) as ws:
            await asyncio.wait_for(ws.recv(), PATIENCE)  # the dev server describes the handshake
            bff.stop()
            await until_refused(bff)
            await ws.send("after the listener closed")
            assert await asyncio.wait_for(ws.recv(), PATIENCE) == "echo:after the listener closed"
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await echo_until_closed(ws, within=1.5 + BOUND)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1012
        assert bff.exit_status(within=BOUND) == 0, log.read_text()[-3000:]


async def test_sigterm_while_the_workers_still_start_stops_them_cleanly(launch: Launcher) -> None:
    """A stop signal forwarded to workers that are still importing bff waits for them to be able to drain (it
    would otherwise kill them, and the supervisor would report a failure): every process exits 0."""
    bff = launch(workers=2, ready=False)
    async with asyncio.timeout(PATIENCE):
        while "Started supervisor process" not in bff.log.read_text():  # noqa: ASYNC110 - a log file has no event
            await asyncio.sleep(0.01)
    bff.stop()
    assert bff.exit_status(within=PATIENCE) == 0, bff.log.read_text()[-3000:]
    assert "stopped with exit status" not in bff.log.read_text()
