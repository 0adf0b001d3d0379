"""The fault-injection test bed: a real ``bff serve`` process (on the event loop asked for), a private Redis and the
reference IdP, each of the two behind a :class:`~tests.faults.relay.Relay`, logged-in clients that keep calling an
API through bff, and the invariants checked once the faults are over.

    Redis <- relay <- bff serve -> relay -> reference IdP (counts the refresh tokens presented to it)
                         ^
                         clients (one session each), requests paced, every answer timed

Invariants (:meth:`Bed.violations`), whatever the faults were:

* every request is answered within :data:`DEADLINE` plus :data:`BOUND` (a request that gets no answer at all is
  cut at the client, later, and counted as a violation instead of hanging the test);
* no session is lost unless the IdP refused a refresh (``invalid_grant``);
* no refresh token is presented to the IdP twice (counted at the IdP, by digest);
* no request is refused for a spending mark: the one bff process stores or renounces each mark it takes before its
  refresh ends, so a mark never outlives its refresh (``bff.tokens.spending``);
* no refresh lock outlives its lease: sampled while the faults run, no lock key holds a longer TTL, and none is
  left once the traffic stopped and a lease passed;
* bff recovers at once: every session gets a 200 within :data:`RECOVERY` of the last fault being lifted, and no
  refusal comes later than that;
* the bff process's file descriptors and memory return to their level before the faults (within a tolerance).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import pytest
import redis

from bff.tokens.flight import POLL_MAX
from bff.tokens.spending import MARK_HELD
from bff.types import Message, Receive, Scope, Send
from bff_devtools.devidp import ClientRegistration, DevIdPSettings, create_devidp_app
from tests.faults.relay import Relay
from tests.support.asgi import read_body, replaying
from tests.support.browser import Browser
from tests.support.configs import SESSION_KEY
from tests.support.devidp import FORM, login_tx
from tests.support.leak_guard import GUARD
from tests.support.redis_server import RedisProcess
from tests.support.servers import free_port, serve
from tests.support.stack import bound_socket

CLIENT_SECRET = "faults-client-secret-0123456789"
#: The interpreter that runs ``bff serve`` (another Python version with bff's dependencies installed may be named
#: here; bff itself is imported from this tree).
PYTHON = os.environ.get("BFF_FAULTS_PYTHON") or sys.executable
XHR = {"X-CSRF": "1"}

#: bff's settings in the bed: short, so that refreshes happen every half second and faults outlast timeouts.
OIDC_TIMEOUT = 1.0
STORE_TIMEOUT = 0.5
LOCK_LEASE = 1.0
#: The IdP's access tokens live 2 s and bff refreshes them 1.5 s before they expire.
ACCESS_TOKEN_TTL = 2
REFRESH_LEEWAY = 1.5
#: The longest a request may take by bff's design: an IdP call, two leases waiting for another refresher's lock,
#: and a few store round trips, each bounded by its timeout.
DEADLINE = OIDC_TIMEOUT + 2 * LOCK_LEASE + 4 * STORE_TIMEOUT
#: The small bound on top (the machine is shared: its scheduling is not ours).
BOUND = 2.0
#: A request still unanswered this long is cut at the client and counted as unanswered.
CLIENT_TIMEOUT = DEADLINE + BOUND + 1.0
#: One refresh once nothing stands in its way (a loopback IdP and Redis), with the machine's scheduling, not ours.
REFRESH_TIME = 0.25
#: Within this long after the last fault is lifted, every session works again; the bound of docs/redis-ha.md ("Once
#: the store is back"): a refresh lock its holder could not release frees itself within a lease and is taken at
#: the next poll; a refresh that could not store its result or renounce its spending mark does so at its next
#: retry, bounded by the store's timeout; whichever is later, then one refresh.
RECOVERY = max(LOCK_LEASE + POLL_MAX, POLL_MAX + STORE_TIMEOUT) + REFRESH_TIME
#: Requests per client: one every PACE seconds.
PACE = 0.05
CLIENTS = 4
#: Tolerances of the resource check: descriptors, and resident memory in bytes. bff's connection pools (Redis, the
#: IdP, the API) may keep up to one idle connection per request that was in flight at once after a fault made them
#: open more; a leak grows with the number of requests (hundreds here), far beyond.
FD_SLACK = 2 * CLIENTS + 4
RSS_SLACK = 24 * 1024 * 1024
#: How long bff gets to stop after SIGTERM at the end of a test before it is killed.
STOP_TIMEOUT = 3.0


@dataclass
class Outcome:
    client: int
    started: float
    elapsed: float
    status: int | None  # None: no answer within CLIENT_TIMEOUT, or the connection failed
    error: str
    message: str = ""

    @property
    def ended(self) -> float:
        return self.started + self.elapsed


class RefreshLedger:
    """The reference IdP's ``/token`` endpoint watched: the digest of every refresh token presented, and how many
    refreshes the IdP refused. Tokens it hands out are taught to the leak guard (bff runs in another process)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app
        self.presented: Counter[str] = Counter()
        self.refused = 0
        self.succeeded = 0
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/token":
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        form = dict(parse_qsl(body.decode("utf-8", "replace")))
        refresh = form.get("grant_type") == "refresh_token"
        if refresh:
            with self._lock:
                self.presented[hashlib.sha256(form.get("refresh_token", "").encode()).hexdigest()] += 1
        status = 0
        answer = b""

        async def watch(message: Message) -> None:
            nonlocal status, answer
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                answer += message.get("body", b"")
            await send(message)

        await self.app(scope, replaying(body, receive), watch)
        if status == 200:
            with contextlib.suppress(ValueError):
                GUARD.learn_token_answer(json.loads(answer))
        if refresh:
            with self._lock:
                if status == 200:
                    self.succeeded += 1
                elif 400 <= status < 500:
                    self.refused += 1

    def reused(self) -> int:
        with self._lock:
            return sum(1 for count in self.presented.values() if count > 1)


@dataclass
class Bed:
    loop: str
    tmp: Path
    redis_server: RedisProcess
    redis_relay: Relay
    idp_relay: Relay
    ledger: RefreshLedger
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    cookies: list[str] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    lost: set[int] = field(default_factory=set)
    lock_ttls: list[int] = field(default_factory=list)
    baseline: tuple[int, int] = (0, 0)
    lifted_at: float = 0.0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    # --- clients -------------------------------------------------------------------------------------------------

    async def sign_in(self, count: int = CLIENTS) -> None:
        for _ in range(count):
            browser = Browser()
            try:
                hops = await asyncio.wait_for(browser.follow(f"{self.url}/bff/login"), 10)
                page = hops[-1]
                assert page.status_code == 200, page.text[:300]
                idp = str(page.url).split("/authorize")[0]
                form = f"tx={login_tx(page)}&username=alice&password=wonderland".encode()
                submitted = await asyncio.wait_for(
                    browser.request("POST", f"{idp}/login", headers=FORM, content=form), 10
                )
                assert submitted.status_code == 302, submitted.text[:300]
                await asyncio.wait_for(browser.follow(submitted.headers["location"]), 10)
                self.cookies.append(browser.cookies(self.url)["__Host-bff"])
            finally:
                await browser.aclose()

    async def _client(self, http: httpx.AsyncClient, index: int) -> None:
        headers = {**XHR, "cookie": f"__Host-bff={self.cookies[index]}"}
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            started = loop.time()
            message = ""
            try:
                response = await http.get(f"{self.url}/api/items", headers=headers)
                status: int | None = response.status_code
                body = {} if status == 200 else response.json()
                error, message = str(body.get("error", "")), str(body.get("message", ""))
            except (httpx.HTTPError, ValueError) as exc:
                status, error = None, type(exc).__name__
            self.outcomes.append(Outcome(index, started, loop.time() - started, status, error, message))
            if status == 401:
                self.lost.add(index)
                return  # the session is gone: nothing more to ask with it
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), PACE)

    async def _sample_locks(self) -> None:
        """The TTL of every refresh lock, read straight from Redis (not through the relay) while the load runs."""
        while not self._stop.is_set():
            with contextlib.suppress(redis.RedisError, OSError):
                self.lock_ttls += await asyncio.to_thread(self._lock_ttls)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.2)

    def _lock_ttls(self) -> list[int]:
        client = redis.Redis(port=self.redis_server.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return [int(client.pttl(key)) for key in client.keys("bff:lock:*")]
        finally:
            client.close()

    @contextlib.asynccontextmanager
    async def load(self) -> AsyncIterator[None]:
        """The clients and the lock sampler run while the block runs."""
        self._stop.clear()
        limits = httpx.Limits(max_connections=CLIENTS * 2, max_keepalive_connections=CLIENTS * 2)
        async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT, limits=limits) as http:
            tasks = [asyncio.create_task(self._client(http, i)) for i in range(len(self.cookies))]
            tasks.append(asyncio.create_task(self._sample_locks()))
            try:
                yield
            finally:
                self._stop.set()
                await asyncio.wait_for(asyncio.gather(*tasks), CLIENT_TIMEOUT + 5)

    # --- faults --------------------------------------------------------------------------------------------------

    async def fault(
        self,
        duration: float,
        apply: Callable[[], None],
        lift: Callable[[], None],
        until: Callable[[], bool] | None = None,
    ) -> None:
        """Apply a fault under load for ``duration`` seconds (or until ``until()`` holds, at most ``duration``),
        lift it; the last lift is the start of recovery."""
        await asyncio.to_thread(apply)
        if until is None:
            await asyncio.sleep(duration)
        else:
            for _ in range(int(duration / 0.01)):
                if until():
                    break
                await asyncio.sleep(0.01)
        await asyncio.to_thread(lift)
        self.lifted_at = asyncio.get_running_loop().time()

    # --- the process ---------------------------------------------------------------------------------------------

    def resources(self) -> tuple[int, int]:
        """Open file descriptors and resident memory (bytes) of the bff process."""
        fds = len(os.listdir(f"/proc/{self.process.pid}/fd"))
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        rss = next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:"))
        return fds, rss

    def runs_uvloop(self) -> bool:
        return "uvloop" in Path(f"/proc/{self.process.pid}/maps").read_text()

    # --- the verdict ---------------------------------------------------------------------------------------------

    async def violations(self) -> list[str]:
        found: list[str] = []
        late = [o for o in self.outcomes if o.status is None or o.elapsed > DEADLINE + BOUND]
        if late:
            worst = max(late, key=lambda o: o.elapsed)
            found.append(
                f"{len(late)} request(s) unanswered or later than {DEADLINE + BOUND:.1f}s "
                f"(worst: {worst.elapsed:.1f}s, {worst.status} {worst.error})"
            )
        if len(self.lost) > self.ledger.refused:
            found.append(f"{len(self.lost)} session(s) lost, the IdP refused {self.ledger.refused} refresh(es)")
        if reused := self.ledger.reused():
            found.append(f"{reused} refresh token(s) presented to the IdP more than once")
        # One bff process: its refreshes of a session run one at a time, and each stores its result or renounces its
        # spending mark before it ends, so no request ever finds a mark that another refresh holds.
        if held := [o for o in self.outcomes if o.message == MARK_HELD]:
            clients = sorted({o.client for o in held})
            found.append(f"{len(held)} request(s) refused for a spending mark left behind (clients {clients})")
        if too_long := [ttl for ttl in self.lock_ttls if ttl > LOCK_LEASE * 1000]:
            found.append(f"refresh locks with TTLs beyond the lease: {sorted(too_long)[-3:]} ms")
        await asyncio.sleep(LOCK_LEASE + 0.3)  # traffic has stopped: every lock must be gone after one lease
        left = await asyncio.to_thread(self._lock_ttls)
        if left:
            found.append(f"{len(left)} refresh lock(s) left a lease after the traffic stopped (TTLs {left} ms)")
        found += self._recovery()
        fds, rss = self.resources()
        if fds > self.baseline[0] + FD_SLACK:
            found.append(f"file descriptors: {fds} after the faults, {self.baseline[0]} before")
        if rss > self.baseline[1] + RSS_SLACK:
            found.append(f"resident memory: {rss >> 20} MiB after the faults, {self.baseline[1] >> 20} MiB before")
        return found

    def _recovery(self) -> list[str]:
        found = []
        for client in range(len(self.cookies)):
            if client in self.lost:
                continue
            after = [o for o in self.outcomes if o.client == client and o.started >= self.lifted_at]
            first = next((o for o in after if o.status == 200), None)
            if first is None:
                found.append(f"client {client}: no 200 after the faults were lifted")
            elif first.ended - self.lifted_at > RECOVERY:
                found.append(f"client {client}: first 200 only {first.ended - self.lifted_at:.1f}s after the faults")
        refused = [o for o in self.outcomes if o.started >= self.lifted_at + RECOVERY and o.status != 200]
        if refused:
            found.append(f"{len(refused)} request(s) failed after recovery: {Counter(o.error for o in refused)}")
        return found

    def describe(self) -> str:
        """A summary for a failure message: answers by status and error, the IdP's count, bff's log tail."""
        answers = Counter(f"{o.status} {o.error}".strip() for o in self.outcomes)
        return (
            f"loop {self.loop}; answers {dict(answers)}; refreshes at the IdP {self.ledger.succeeded} ok, "
            f"{self.ledger.refused} refused; lost sessions {sorted(self.lost)}; exchanges cut after their request "
            f"reached the IdP at a crash: {self.idp_relay.cut}\n"
            f"--- bff log (tail) ---\n{self.log.read_text(errors='replace')[-2500:]}"
        )


def _config(path: Path, *, port: int, redis_port: int, idp_port: int, upstream: str) -> None:
    path.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
public_origin = "http://127.0.0.1:{port}"
drain_delay = "0s"
shutdown_timeout = "{STOP_TIMEOUT / 2:g}s"

[session]
store = "redis://127.0.0.1:{redis_port}/0"
keys = ["{SESSION_KEY}"]
store_timeout = "{int(STORE_TIMEOUT * 1000)}ms"

[oidc]
issuer = "http://127.0.0.1:{idp_port}"
client_id = "spa-bff"
client_secret = "{CLIENT_SECRET}"
timeout = "{int(OIDC_TIMEOUT * 1000)}ms"

[tokens]
refresh_leeway = "{int(REFRESH_LEEWAY * 1000)}ms"
refresh_lock_lease = "{int(LOCK_LEASE * 1000)}ms"

[[routes]]
path = "/api"
upstream = "{upstream}"
token = "user"
""")


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    """The API behind bff: answers 200 and never echoes what it was sent."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"bff exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    pytest.fail(f"bff never became ready:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def running_bed(loop: str, tmp: Path, redis_server: RedisProcess) -> Iterator[Bed]:
    """Everything started (relays, IdP, API, bff serve on ``loop``) and stopped again, in order."""
    with contextlib.ExitStack() as stack:
        redis_relay = Relay(redis_server.port).start()
        stack.callback(redis_relay.close)
        bff_port = free_port()
        origin = f"http://127.0.0.1:{bff_port}"
        idp_sock = bound_socket()
        idp_relay = Relay(idp_sock.getsockname()[1]).start()
        stack.callback(idp_relay.close)
        settings = DevIdPSettings(
            issuer=f"http://127.0.0.1:{idp_relay.port}",
            data_dir=tmp / "idp",
            clients=(
                ClientRegistration(
                    "spa-bff",
                    CLIENT_SECRET,
                    redirect_uris=(f"{origin}/bff/callback",),
                    post_logout_redirect_uris=(f"{origin}/",),
                    backchannel_logout_uri=f"{origin}/bff/backchannel-logout",
                ),
            ),
            access_token_ttl=ACCESS_TOKEN_TTL,
        )
        ledger = RefreshLedger(create_devidp_app(settings))
        stack.enter_context(serve(ledger, sock=idp_sock))
        upstream = stack.enter_context(serve(_ok, lifespan="off"))
        config = tmp / "bff.toml"
        _config(config, port=bff_port, redis_port=redis_relay.port, idp_port=idp_relay.port, upstream=upstream)
        log = tmp / "bff.log"
        GUARD.watch_bff(origin)
        GUARD.learn(CLIENT_SECRET, "client secret")
        GUARD.learn(SESSION_KEY, "session key")
        root = Path(__file__).resolve().parents[2]
        with log.open("wb") as out:
            process = subprocess.Popen(
                [PYTHON, "-m", "tests.faults.launch", loop, "serve", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=root,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

        def stop() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)  # in case a test left it stopped
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:  # a request hung in bff keeps its graceful shutdown waiting
                process.kill()
                process.wait(5)

        stack.callback(stop)
        _wait_ready(origin, process, log)
        yield Bed(loop, tmp, redis_server, redis_relay, idp_relay, ledger, origin, process, log)
