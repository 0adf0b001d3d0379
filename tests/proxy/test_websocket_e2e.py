"""WebSocket routes end to end: two real ``bff serve`` processes sharing a real Redis, the test OpenID Provider, and
a real WebSocket upstream on loopback; the test is the browser (a ``websockets`` client sending ``Origin`` and the
session cookie as Chromium does).

What it proves: frames cross both ways with the user's token on the upstream handshake only; every refusal (no
session, foreign or missing Origin, a route without ``websocket = true``) is an HTTP answer before the upstream sees
any handshake, and an upstream that refuses its handshake is a 502 (with a step-up challenge: ``step_up_required``);
a browser that does not read holds the upstream back (backpressure, not buffering); ``max_message`` both ways and
``idle_timeout`` close with their documented codes; a session that ends anywhere (logout on the other instance,
back-channel logout, ``bff sessions revoke``, a token that cannot be refreshed) closes the socket with 4401, while a
token that can be refreshed keeps it open; a socket open at the shutdown deadline closes with 1012; debug logs of
the handshake hold no token; and all of it under ``bff serve --workers 2``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from tests.support.bff_process import (
    RunningBff,
    configure,
    expire_session_token,
    serving_bff,
    start_bff,
    wait_ready,
)
from tests.support.browser import Browser
from tests.support.leak_guard import GUARD, fingerprint
from tests.support.oidc_provider import TestProvider, running
from tests.support.servers import free_port
from tests.support.ws_upstream import WebSocketUpstream, running_ws_upstream

#: A guard against a hang, not a measurement: sessions are re-read every 0.5 s (``session_check``).
BOUND = 10
MAX_MESSAGE = 1024
XHR = {"X-CSRF": "1"}

ROUTES = """websocket = true
max_message = "1KiB"
idle_timeout = "{idle}"
session_check = "500ms"

[[routes]]
path = "/plain"
upstream = "{upstream}"

# A calm route: an idle limit no test reaches (session ends, backpressure).
[[routes]]
path = "/calm"
upstream = "{upstream}"
websocket = true
max_message = "64KiB"
idle_timeout = "1m"

[[routes]]
path = "/anonymous"
upstream = "{upstream}"
token = "none"
websocket = true
"""


@dataclass
class Stack:
    provider: TestProvider
    upstream: WebSocketUpstream
    ports: list[int]
    configs: list[Path]
    redis_url: str

    def ws(self, i: int = 0) -> str:
        return f"ws://127.0.0.1:{self.ports[i]}"

    def origin(self, i: int = 0) -> str:
        return f"http://127.0.0.1:{self.ports[i]}"


def write_bff_config(path: Path, port: int, redis_url: str, provider: TestProvider, upstream: str, idle: str) -> None:
    extra = ROUTES.format(idle=idle, upstream=upstream)
    configure(path, port, redis_url=redis_url, provider=provider, upstream=upstream, extra=extra)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("ws")
    with ExitStack() as stack, running(TestProvider()) as provider, running_ws_upstream() as upstream:
        ports = [free_port(), free_port()]
        configs = []
        processes = []
        for i, port in enumerate(ports):
            config = tmp / f"bff{i}.toml"
            write_bff_config(config, port, redis_url, provider, upstream.url, "2s")
            configs.append(config)
            process = start_bff(config, port, tmp / f"bff{i}.log")
            stack.callback(process.wait, 10)
            stack.callback(process.terminate)
            processes.append((process, tmp / f"bff{i}.log"))
        for (process, log), port in zip(processes, ports, strict=True):
            wait_ready(port, process, log)
        yield Stack(provider, upstream, ports, configs, redis_url)


@pytest.fixture(autouse=True)
def fresh(stack: Stack) -> Iterator[None]:
    stack.upstream.handshakes.clear()
    stack.upstream.closes.clear()
    yield
    stack.provider.token_error = None


async def log_in(origin: str) -> str:
    browser = Browser()
    try:
        await browser.follow(f"{origin}/bff/login")
        return browser.cookies(origin)["__Host-bff"]
    finally:
        await browser.aclose()


@asynccontextmanager
async def socket(
    url: str, *, origin: str | None, cookie: str | None = None, subprotocols: list[str] | None = None
) -> AsyncIterator[ClientConnection]:
    headers = {"cookie": f"__Host-bff={cookie}"} if cookie else {}
    async with connect(
        url,
        origin=origin,  # type: ignore[arg-type]
        additional_headers=headers,
        open_timeout=BOUND,
        max_size=2**24,
        compression=None,
        subprotocols=subprotocols,  # type: ignore[arg-type]
    ) as ws:
        yield ws


async def refusal(url: str, *, origin: str | None, cookie: str | None = None) -> tuple[int, dict[str, str]]:
    with pytest.raises(InvalidStatus) as refused:
        async with socket(url, origin=origin, cookie=cookie):
            pass
    response = refused.value.response
    assert response.headers["content-type"] == "application/json"
    assert response.body is not None
    GUARD.check("websocket refusal", response.status_code, [], bytes(response.body))
    return response.status_code, json.loads(response.body)


async def closed_with(ws: ClientConnection) -> int | None:
    """The close code bff sent, once the socket closes (messages still in flight are drained)."""
    try:
        async with asyncio.timeout(BOUND):
            while True:
                await ws.recv()
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None


async def upstream_close(upstream: WebSocketUpstream, path: str) -> int | None:
    """The close code the upstream got on its connection for ``path``, once that connection ended."""
    async with asyncio.timeout(BOUND):
        while True:
            codes = [code for seen, code in upstream.closes if seen == path]
            if codes:
                return codes[0]
            await asyncio.sleep(0.01)  # the upstream runs in its own thread: nothing to await across threads


def issued(provider: TestProvider) -> set[str]:
    return {fingerprint(t) for t in provider.issued_tokens()}


async def test_frames_cross_both_ways_with_the_users_token_on_the_upstream_handshake(stack: Stack) -> None:
    cookie = await log_in(stack.origin())
    async with socket(f"{stack.ws()}/api/chat?room=7", origin=stack.origin(), cookie=cookie) as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"
        await ws.send(b"\x00\xffbinary")
        assert await ws.recv() == b"\x00\xffbinary"
        await ws.send("whoami")
        assert await ws.recv() in issued(stack.provider)
        await ws.send("ticks:100")
        assert [await ws.recv() for _ in range(100)] == [f"tick {n}" for n in range(100)]
    [handshake] = stack.upstream.handshakes
    assert handshake.path == "/chat?room=7"  # the prefix stripped, the query kept
    assert handshake.token_fingerprint in issued(stack.provider)
    assert "cookie" not in handshake.headers  # the session cookie never leaves bff
    assert handshake.headers["x-forwarded-for"] == "127.0.0.1"
    assert handshake.headers["x-forwarded-host"] == f"127.0.0.1:{stack.ports[0]}"
    assert await upstream_close(stack.upstream, "/chat?room=7") == 1000  # the browser's close code reached it


async def test_a_handshake_without_a_session_is_refused_401_before_any_upstream_connection(stack: Stack) -> None:
    status, body = await refusal(f"{stack.ws()}/api/chat", origin=stack.origin())
    assert (status, body["error"]) == (401, "unauthenticated")
    status, body = await refusal(f"{stack.ws()}/api/chat", origin=stack.origin(), cookie="forged-or-stale")
    assert (status, body["error"]) == (401, "unauthenticated")
    assert stack.upstream.handshakes == []


@pytest.mark.parametrize("origin", [None, "http://evil.example", "null", "http://127.0.0.1:1"])
async def test_a_foreign_or_missing_origin_is_refused_before_any_upstream_connection(
    stack: Stack, origin: str | None
) -> None:
    cookie = await log_in(stack.origin())
    status, body = await refusal(f"{stack.ws()}/api/chat", origin=origin, cookie=cookie)
    assert (status, body["error"]) == (401, "csrf")
    assert stack.upstream.handshakes == []


async def test_a_route_without_websocket_refuses_the_handshake(stack: Stack) -> None:
    cookie = await log_in(stack.origin())
    status, body = await refusal(f"{stack.ws()}/plain/chat", origin=stack.origin(), cookie=cookie)
    assert (status, body["error"]) == (403, "forbidden")
    assert stack.upstream.handshakes == []


async def test_an_upstream_that_refuses_the_handshake_is_a_502_to_the_browser(stack: Stack) -> None:
    # token = "none": no bearer on the upstream handshake, which this upstream refuses with 401.
    status, body = await refusal(f"{stack.ws()}/anonymous/chat", origin=stack.origin())
    assert (status, body["error"]) == (502, "bad_gateway")
    [handshake] = stack.upstream.handshakes
    assert handshake.token_fingerprint == fingerprint("")  # no Authorization at all


async def test_an_upstream_step_up_challenge_on_the_handshake_is_step_up_required(stack: Stack) -> None:
    cookie = await log_in(stack.origin())
    status, body = await refusal(f"{stack.ws()}/api/step-up/feed", origin=stack.origin(), cookie=cookie)
    assert (status, body["error"]) == (401, "step_up_required")
    details: dict[str, object] = dict(body)  # max_age is a JSON number
    assert (details["acr_values"], details["max_age"]) == ("mfa", 60)
    assert body["login_url"].startswith("/bff/login?")
    [handshake] = stack.upstream.handshakes
    assert handshake.path == "/step-up/feed"  # the upstream refused it with the user's token
    assert handshake.token_fingerprint in issued(stack.provider)


async def test_a_browser_that_does_not_read_holds_the_upstream_back_instead_of_filling_bff(stack: Stack) -> None:
    """Backpressure: the upstream offers 64 MiB; while the browser reads nothing, the upstream's sends stall once
    the few buffers on the way are full (TCP's and at most a few messages in bff); then every message arrives, in
    order, once the browser reads."""
    count, size = 4096, 16 * 1024
    cookie = await log_in(stack.origin())
    async with connect(
        f"{stack.ws()}/calm/x",
        origin=Origin(stack.origin()),
        additional_headers={"cookie": f"__Host-bff={cookie}"},
        max_size=2**20,
        max_queue=1,  # the browser's side stops reading its socket after one message
        compression=None,
        open_timeout=BOUND,
    ) as ws:
        await ws.send(f"flood:{count}:{size}")
        seen = -1
        async with asyncio.timeout(BOUND * 3):
            while seen != stack.upstream.flooded:  # until the upstream's sends stop making progress
                seen = stack.upstream.flooded
                await asyncio.sleep(1.0)  # the upstream runs in its own thread: nothing to await across threads
        assert seen < count // 2, seen  # far less than offered went anywhere: bff did not buffer the rest
        async with asyncio.timeout(BOUND * 6):
            for n in range(count):
                message = await ws.recv()
                assert message[:8] == f"{n:08d}"
                assert len(message) == size
    assert stack.upstream.flooded == count


async def test_a_message_over_max_message_from_the_browser_closes_with_1009(stack: Stack) -> None:
    cookie = await log_in(stack.origin())
    async with socket(f"{stack.ws()}/api/chat", origin=stack.origin(), cookie=cookie) as ws:
        await ws.send("y" * MAX_MESSAGE)  # at the limit: relayed
        assert await ws.recv() == "y" * MAX_MESSAGE
        await ws.send("y" * (MAX_MESSAGE + 1))
        assert await closed_with(ws) == 1009
    # a multi-byte text under the limit in characters, over it in UTF-8 bytes
    async with socket(f"{stack.ws()}/api/chat", origin=stack.origin(), cookie=cookie) as ws:
        await ws.send("é" * (MAX_MESSAGE // 2 + 1))
        assert await closed_with(ws) == 1009


async def test_a_message_over_max_message_from_the_upstream_closes_with_1009(stack: Stack) -> None:
    cookie = await log_in(stack.origin())
    async with socket(f"{stack.ws()}/api/chat", origin=stack.origin(), cookie=cookie) as ws:
        await ws.send(f"big:{MAX_MESSAGE}")
        assert len(await ws.recv()) == MAX_MESSAGE
        await ws.send(f"big:{MAX_MESSAGE + 1}")
        assert await closed_with(ws) == 1009


async def test_an_idle_socket_is_closed_with_4408(stack: Stack) -> None:
    cookie = await log_in(stack.origin())
    async with socket(f"{stack.ws()}/api/chat", origin=stack.origin(), cookie=cookie) as ws:
        await ws.send("still here")
        assert await ws.recv() == "still here"
        assert await closed_with(ws) == 4408


async def logout_on_the_other_instance(stack: Stack, cookie: str) -> None:
    async with httpx.AsyncClient() as http:
        answer = await http.post(f"{stack.origin(1)}/bff/logout", headers={**XHR, "cookie": f"__Host-bff={cookie}"})
    assert answer.status_code == 200, answer.text


async def back_channel_logout(stack: Stack, cookie: str) -> None:
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            f"{stack.origin(1)}/bff/backchannel-logout", data={"logout_token": stack.provider.mint_logout_token()}
        )
    assert answer.status_code == 200, answer.text


async def bff_sessions_revoke(stack: Stack, cookie: str) -> None:
    revoke = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bff", "sessions", "revoke", "--sub", "alice-0001", "--config", str(stack.configs[0]),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(revoke.communicate(), BOUND * 3)
    assert revoke.returncode == 0, output.decode()


async def token_expired_and_cannot_be_refreshed(stack: Stack, cookie: str) -> None:
    stack.provider.token_error = "invalid_grant"
    await expire_session_token(stack.redis_url, stack.configs[0], cookie)


@pytest.mark.parametrize(
    ("instance", "end"),
    [
        (0, logout_on_the_other_instance),
        (0, back_channel_logout),
        (1, bff_sessions_revoke),
        (0, token_expired_and_cannot_be_refreshed),
    ],
    ids=lambda value: getattr(value, "__name__", None),
)
async def test_a_session_that_ends_closes_the_socket_with_4401_and_the_upstream_side_with_1001(
    stack: Stack, instance: int, end: Callable[[Stack, str], Awaitable[None]]
) -> None:
    cookie = await log_in(stack.origin(instance))
    path = f"/{end.__name__}"
    async with socket(f"{stack.ws(instance)}/calm{path}", origin=stack.origin(instance), cookie=cookie) as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"
        await end(stack, cookie)
        assert await closed_with(ws) == 4401
    assert await upstream_close(stack.upstream, path) == 1001  # bff ended the upstream side too


async def test_a_token_about_to_expire_is_refreshed_and_the_socket_stays_open(stack: Stack) -> None:
    cookie = await log_in(stack.origin(0))
    refreshes = stack.provider.refresh_calls
    async with socket(f"{stack.ws(0)}/api/chat", origin=stack.origin(0), cookie=cookie) as ws:
        await ws.send("whoami")
        handshake_token = await ws.recv()
        await expire_session_token(stack.redis_url, stack.configs[0], cookie)
        async with asyncio.timeout(BOUND):
            while stack.provider.refresh_calls == refreshes:
                await ws.send("ping")
                assert await ws.recv() == "ping"
                await asyncio.sleep(0.1)
        await ws.send("whoami")
        assert await ws.recv() == handshake_token  # the upstream keeps the token of its handshake
    assert stack.provider.refresh_calls == refreshes + 1


def own_bff(tmp_path: Path, redis_url: str, stack: Stack, idle: str, *args: str) -> AbstractContextManager[RunningBff]:
    """A ``bff serve`` of the test's own (with the stack's routes, ``idle_timeout`` ``idle`` and ``args``), ready."""
    extra = ROUTES.format(idle=idle, upstream=stack.upstream.url)
    return serving_bff(
        tmp_path, redis_url=redis_url, provider=stack.provider, upstream=stack.upstream.url, args=args, extra=extra
    )


async def test_a_socket_open_at_the_shutdown_deadline_closes_with_1012_both_ways(
    tmp_path: Path, redis_url: str, stack: Stack
) -> None:
    # write_config: drain_delay = "0s", shutdown_timeout = "2s", so the deadline comes 2 s after the stop signal.
    with own_bff(tmp_path, redis_url, stack, "1m") as bff:
        cookie = await log_in(bff.url)
        async with socket(f"ws://127.0.0.1:{bff.port}/api/shutdown", origin=bff.url, cookie=cookie) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            bff.process.terminate()
            assert await closed_with(ws) == 1012  # service restart: reconnect, to another instance
        assert await upstream_close(stack.upstream, "/shutdown") == 1012
        assert await asyncio.to_thread(bff.process.wait, BOUND) == 0


async def test_debug_logs_of_a_relayed_handshake_hold_no_token(tmp_path: Path, redis_url: str, stack: Stack) -> None:
    """The WebSocket client logs each handshake's headers at debug level: bff's redaction masks the bearer token."""
    with own_bff(tmp_path, redis_url, stack, "1m", "--log-level", "debug") as bff:
        cookie = await log_in(bff.url)
        async with socket(f"ws://127.0.0.1:{bff.port}/api/logged", origin=bff.url, cookie=cookie) as ws:
            await ws.send("whoami")
            assert await ws.recv() in issued(stack.provider)
    written = bff.log.read_text()
    assert "websockets.client" in written or "> GET /logged" in written, written[-2000:]  # the handshake was logged
    assert not [t for t in stack.provider.issued_tokens() if t in written]
    assert cookie not in written


async def test_works_under_workers_2(tmp_path: Path, redis_url: str, stack: Stack) -> None:
    with own_bff(tmp_path, redis_url, stack, "30s", "--workers", "2") as bff:
        origin, port = bff.url, bff.port
        cookie = await log_in(origin)
        async with (
            socket(f"ws://127.0.0.1:{port}/api/a", origin=origin, cookie=cookie) as a,
            socket(f"ws://127.0.0.1:{port}/api/b", origin=origin, cookie=cookie) as b,
            socket(f"ws://127.0.0.1:{port}/api/c", origin=origin, cookie=cookie) as c,
            socket(f"ws://127.0.0.1:{port}/api/d", origin=origin, cookie=cookie) as d,
        ):
            for n, ws in enumerate((a, b, c, d)):
                await ws.send(f"socket {n}")
                assert await ws.recv() == f"socket {n}"
            async with httpx.AsyncClient() as http:
                answer = await http.post(f"{origin}/bff/logout", headers={**XHR, "cookie": f"__Host-bff={cookie}"})
            assert answer.status_code == 200, answer.text
            assert [await closed_with(ws) for ws in (a, b, c, d)] == [4401] * 4
        status, body = await refusal(f"ws://127.0.0.1:{port}/api/a", origin=origin, cookie=cookie)
        assert (status, body["error"]) == (401, "unauthenticated")
