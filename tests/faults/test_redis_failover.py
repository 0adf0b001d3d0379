"""Redis high availability for real: two ``bff serve`` processes on one replicated store, the reference IdP
rotating refresh tokens with strict reuse detection, logged-in clients calling an API through both instances
without pause, and the store failing over (``tests.support.redis_ha`` starts the servers): a Sentinel group (a
primary, a replica, three sentinels; the primary SIGKILLed, or three ``SENTINEL FAILOVER`` switch-overs) or a
Cluster of three shards with a replica each (a shard's primary SIGKILLed, or ``CLUSTER FAILOVER``).

What must hold, whatever the failover's timing:

* every answer is a 200 or a 503 with ``Retry-After``; never a 500, never a 401 or a cleared cookie (a logout);
* every session works again within :data:`RESUME` seconds of the new primary taking over (so within the failover
  time plus a few seconds of the kill), and nothing fails after that;
* no session written (and replicated) before the failover is lost;
* no refresh token is presented to the IdP twice, the IdP refuses none, and every token family is still active
  (a replayed refresh token would have revoked its family);
* access tokens expire during the failover (they live :data:`ACCESS_TOKEN_TTL` seconds), so refreshes are due
  while the store is away, and they happen once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from bff.config import load_config
from bff.session.manager import SessionManager
from bff.session.redis_store import RedisStore
from bff_devtools.devidp import ClientRegistration, DevIdPSettings, create_devidp_app
from tests.faults.bed import PYTHON, RefreshLedger
from tests.support.asgi import ok_answer
from tests.support.bff_process import wait_ready
from tests.support.browser import Browser
from tests.support.configs import SESSION_KEY
from tests.support.devidp import FORM, login_tx
from tests.support.leak_guard import GUARD
from tests.support.redis_ha import FailingOver, cluster_group, sentinel_group
from tests.support.servers import free_port, serve
from tests.support.stack import bound_socket

pytestmark = [pytest.mark.redis, pytest.mark.failover]

CLIENT_SECRET = "failover-client-secret-0123456789"
XHR = {"X-CSRF": "1"}
INSTANCES = 2
CLIENTS = 4
#: One request per client every PACE seconds, alternating between the instances.
PACE = 0.05
STORE_TIMEOUT = 0.5
#: With Sentinel, writes count once the replica holds them: every replica, so whichever is promoted holds every
#: confirmed write. (Refused on a Cluster.)
STORE_REPLICAS = {"sentinel": 1, "cluster": 0}
OIDC_TIMEOUT = 1.0
LOCK_LEASE = 1.0
#: Access tokens live 2 s and are refreshed 1.5 s before they expire: a refresh per session every half second, and
#: every token expires while the store fails over.
ACCESS_TOKEN_TTL = 2
REFRESH_LEEWAY = 1.5
#: Traffic before the failover, so that refreshes rotate tokens while the primary still runs.
WARMUP = 1.0
#: Every session answers 200 again within this long after the new primary took over: "the failover time plus a few
#: seconds" (after a Sentinel kill the restarted server must rejoin and sync as a replica first, and refreshes wait
#: for a replica to confirm their writes; a loaded machine needs several seconds for that).
RESUME = 8.0
#: Traffic after the resume bound: whatever fails then is a failure.
SETTLE = 1.0
#: Switch-overs in a row (each one a window in which the old primary takes writes its successor never sees), and
#: the traffic between two of them.
SWITCH_OVERS = 3
GAP = 1.0


@dataclass
class Answer:
    client: int
    instance: int
    started: float
    ended: float
    status: int | None  # None: no answer (connection failed or cut at the client)
    error: str
    retry_after: str | None
    set_cookie: bool


@dataclass
class Pair:
    """Two ``bff serve`` processes on one replicated store, and the clients that drive them."""

    group: FailingOver
    urls: list[str]
    config: Path
    ledger: RefreshLedger
    idp: str
    logs: list[Path]
    cookies: list[str] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    admin: Browser | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def sign_in(self, count: int) -> None:
        """Log ``count`` users in (alternating instances); the first browser stays open as the IdP's admin."""
        for n in range(count):
            url = self.urls[n % INSTANCES]
            browser = Browser()
            try:
                page = (await asyncio.wait_for(browser.follow(f"{url}/bff/login"), 10))[-1]
                assert page.status_code == 200, page.text[:300]
                form = f"tx={login_tx(page)}&username=alice&password=wonderland".encode()
                submitted = await browser.request("POST", f"{self.idp}/login", headers=FORM, content=form)
                assert submitted.status_code == 302, submitted.text[:300]
                await asyncio.wait_for(browser.follow(submitted.headers["location"]), 10)
                self.cookies.append(browser.cookies(url)["__Host-bff"])
            finally:
                if self.admin is None:
                    self.admin = browser
                else:
                    await browser.aclose()

    async def _client(self, http: httpx.AsyncClient, index: int) -> None:
        headers = {**XHR, "cookie": f"__Host-bff={self.cookies[index]}"}
        turn = index
        while not self._stop.is_set():
            instance = turn % INSTANCES
            turn += 1
            started = time.monotonic()
            try:
                response = await http.get(f"{self.urls[instance]}/api/items", headers=headers)
                status: int | None = response.status_code
                error = "" if status == 200 else str(response.json().get("error", response.text[:80]))
                retry_after = response.headers.get("retry-after")
                set_cookie = "set-cookie" in response.headers
            except (httpx.HTTPError, ValueError) as exc:
                status, error, retry_after, set_cookie = None, type(exc).__name__, None, False
            self.answers.append(
                Answer(index, instance, started, time.monotonic(), status, error, retry_after, set_cookie)
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), PACE)

    @contextlib.asynccontextmanager
    async def load(self) -> AsyncIterator[None]:
        self._stop.clear()
        async with httpx.AsyncClient(timeout=10) as http:
            tasks = [asyncio.create_task(self._client(http, i)) for i in range(len(self.cookies))]
            try:
                yield
            finally:
                self._stop.set()
                await asyncio.wait_for(asyncio.gather(*tasks), 15)

    async def families(self) -> list[dict[str, object]]:
        """alice's refresh-token families at the IdP (its admin API, as the first user's IdP session)."""
        assert self.admin is not None
        session = await self.admin.get(f"{self.idp}/admin/api/session")
        assert session.status_code == 200, session.text[:300]
        listed = await self.admin.request(
            "GET",
            f"{self.idp}/admin/api/users/alice/families",
            headers={"X-CSRF-Token": session.json()["csrf_token"]},
        )
        assert listed.status_code == 200, listed.text[:300]
        families: list[dict[str, object]] = listed.json()["families"]
        return families

    async def stored_sessions(self) -> int:
        """How many of the clients' sessions the store (through the sentinels) still holds."""
        store = RedisStore.from_url(self.group.url, timeout=2.0)
        try:
            sessions = SessionManager(store, load_config(self.config).session)
            found = 0
            for cookie in self.cookies:
                session_id = sessions.session_id_from_cookie(cookie)
                assert session_id is not None
                found += await store.get(sessions.key_for(session_id)) is not None
            return found
        finally:
            await store.aclose()

    def describe(self) -> str:
        answers = Counter(f"{a.status} {a.error}".strip() for a in self.answers)
        logs = "\n".join(
            f"--- bff {i} log (tail) ---\n{p.read_text(errors='replace')[-2000:]}" for i, p in enumerate(self.logs)
        )
        return (
            f"answers {dict(answers)}; refreshes at the IdP {self.ledger.succeeded} ok, {self.ledger.refused} "
            f"refused, {self.ledger.reused()} reused\n{logs}"
        )


def _config(path: Path, *, port: int, store: str, replicas: int, idp: str, upstream: str) -> None:
    path.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
public_origin = "http://127.0.0.1:{port}"
drain_delay = "0s"
shutdown_timeout = "2s"

[session]
store = "{store}"
keys = ["{SESSION_KEY}"]
store_timeout = "{int(STORE_TIMEOUT * 1000)}ms"
store_replicas = {replicas}

[oidc]
issuer = "{idp}"
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


@contextlib.contextmanager
def running_pair(tmp: Path, group: FailingOver, replicas: int) -> Iterator[Pair]:
    """The reference IdP (its ``/token`` watched by a ``RefreshLedger``), an upstream and two ``bff serve``."""
    with contextlib.ExitStack() as stack:
        ports = [free_port() for _ in range(INSTANCES)]
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        idp_sock = bound_socket()
        idp = f"http://127.0.0.1:{idp_sock.getsockname()[1]}"
        settings = DevIdPSettings(
            issuer=idp,
            data_dir=tmp / "idp",
            clients=(
                ClientRegistration(
                    "spa-bff",
                    CLIENT_SECRET,
                    redirect_uris=tuple(f"{url}/bff/callback" for url in urls),
                    post_logout_redirect_uris=tuple(f"{url}/" for url in urls),
                ),
            ),
            access_token_ttl=ACCESS_TOKEN_TTL,
        )
        ledger = RefreshLedger(create_devidp_app(settings))
        stack.enter_context(serve(ledger, sock=idp_sock))
        upstream = stack.enter_context(serve(ok_answer, lifespan="off"))
        GUARD.learn(CLIENT_SECRET, "client secret")
        GUARD.learn(SESSION_KEY, "session key")
        processes: list[tuple[subprocess.Popen[bytes], Path, int]] = []
        for i, (port, url) in enumerate(zip(ports, urls, strict=True)):
            config = tmp / f"bff{i}.toml"
            _config(config, port=port, store=group.url, replicas=replicas, idp=idp, upstream=upstream)
            GUARD.watch_bff(url)
            log = tmp / f"bff{i}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [PYTHON, "-m", "bff", "serve", "--config", str(config)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            stack.callback(_stop, process)
            processes.append((process, log, port))
        for process, log, port in processes:
            wait_ready(port, process, log)
        yield Pair(group, urls, tmp / "bff0.toml", ledger, idp, [log for _, log, _ in processes])


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@pytest.mark.parametrize(
    ("topology", "how", "failovers"),
    [
        ("sentinel", "kill", 1),
        ("sentinel", "switch-over", SWITCH_OVERS),
        ("cluster", "kill", 1),
        ("cluster", "switch-over", 1),
    ],
)
async def test_failover_under_traffic_through_two_instances(
    tmp_path: Path, topology: str, how: str, failovers: int
) -> None:
    """Sentinel: the primary killed (and restarted as a replica), or three switch-overs (``SENTINEL FAILOVER``).
    Cluster (three shards with a replica each): a shard's primary killed, or ``CLUSTER FAILOVER`` on its replica."""
    with contextlib.ExitStack() as stack:
        group: FailingOver = (
            stack.enter_context(sentinel_group()) if topology == "sentinel" else stack.enter_context(cluster_group())
        )
        pair = stack.enter_context(running_pair(tmp_path, group, STORE_REPLICAS[topology]))
        try:
            await pair.sign_in(CLIENTS)
            await asyncio.to_thread(group.replicate)
            assert await pair.stored_sessions() == CLIENTS
            async with pair.load():
                await asyncio.sleep(WARMUP)
                await asyncio.to_thread(group.replicate)
                refreshed_before = pair.ledger.succeeded
                started_at: list[float] = []
                ended_at: list[float] = []
                for n in range(failovers):
                    if n:
                        await asyncio.sleep(GAP)
                        await asyncio.to_thread(group.wait_until_watched)
                    started_at.append(time.monotonic())
                    await asyncio.to_thread(group.kill_primary if how == "kill" else group.switch_over)
                    ended_at.append(await asyncio.to_thread(group.wait_for_failover))
                    # The old primary rejoins as a replica (restarted, or demoted): until then no replica confirms
                    # a write, and refreshes answer 503.
                    await asyncio.to_thread(group.rejoin)
                # Recovered: RESUME after the last failover, and not before every replica is back (with
                # store_replicas, a write no replica can confirm is a 503 by design: docs/redis-ha.md).
                recovered = max(ended_at[-1] + RESUME, time.monotonic())
                await asyncio.sleep(recovered - time.monotonic() + SETTLE)
            families = await pair.families()
            stored = await pair.stored_sessions()
        finally:
            if pair.admin is not None:
                await pair.admin.aclose()

        problems: list[str] = []
        if bad := [a for a in pair.answers if a.status not in (200, 503)]:
            problems.append(f"{len(bad)} answer(s) neither 200 nor 503: {Counter((a.status, a.error) for a in bad)}")
        if bad := [a for a in pair.answers if a.status == 503 and not (a.retry_after or "").isdigit()]:
            problems.append(f"{len(bad)} 503(s) without Retry-After")
        if bad := [a for a in pair.answers if a.set_cookie]:
            problems.append(f"{len(bad)} answer(s) set a cookie (a logout clears it)")
        if how == "kill" and not any(a.status == 503 for a in pair.answers if a.started >= started_at[0]):
            problems.append("no request saw the failover: the test did not test it")
        for n, failed_over_at in enumerate(ended_at):
            for client in range(CLIENTS):
                first = next(
                    (a for a in pair.answers if a.client == client and a.started >= failed_over_at and a.status == 200),
                    None,
                )
                if first is None or first.ended > failed_over_at + RESUME:
                    late = "never" if first is None else f"{first.ended - failed_over_at:.1f}s after"
                    problems.append(f"failover {n}, client {client}: first 200 {late} the new primary took over")
        if after := [a for a in pair.answers if a.started >= recovered and a.status != 200]:
            problems.append(
                f"{len(after)} failure(s) after recovery: {Counter((a.status, a.error) for a in after)}; first: "
                + ", ".join(f"bff {a.instance} at +{a.started - ended_at[-1]:.1f}s" for a in after[:5])
            )
        if stored != CLIENTS:
            problems.append(f"{CLIENTS - stored} session(s) lost in the failover")
        if pair.ledger.reused() or pair.ledger.refused:
            problems.append(
                f"refresh tokens presented twice: {pair.ledger.reused()}; refused by the IdP: {pair.ledger.refused}"
            )
        if pair.ledger.succeeded - refreshed_before < CLIENTS:
            problems.append("the refreshes due during the failover did not happen after it")
        if inactive := [f for f in families if f["state"] != "active"]:
            problems.append(f"{len(inactive)} token famil(ies) not active: {[f['revoked_reason'] for f in inactive]}")
        took = ", ".join(f"{end - start:.1f}s" for start, end in zip(started_at, ended_at, strict=True))
        assert not problems, "\n".join(problems) + f"\nfailovers took {took}\n" + pair.describe()
