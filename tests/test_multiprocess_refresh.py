"""The acceptance test of the token lifecycle: three real ``bff serve`` processes sharing one real Redis, 50 parallel
requests on an expired access token, an IdP that rotates refresh tokens and revokes the whole family on reuse:
every request succeeds, the IdP sees exactly one refresh and no reuse. And again with an IdP slower than the
refresh lock's lease."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from bff.config import load_config
from bff.session.manager import SessionManager
from bff.session.redis_store import RedisStore
from tests.support.bff_process import expire_session_token, log_in, serving_bff
from tests.support.leak_guard import fingerprint
from tests.support.oidc_provider import TestProvider
from tests.support.redis_server import RedisProcess

XHR = {"X-CSRF": "1"}
PROCESSES = 3
REQUESTS = 50


@contextmanager
def running_bffs(
    tmp_path: Path,
    count: int,
    redis_process: RedisProcess,
    provider: TestProvider,
    upstream: str,
    *,
    lease: str,
    oidc_timeout: str | None = None,
) -> Iterator[tuple[list[int], list[Path]]]:
    """``count`` ``bff serve`` processes sharing ``redis_process``, each ready, all stopped on leaving; yields their
    ports and their config files."""
    with ExitStack() as stack:
        bffs = [
            stack.enter_context(
                serving_bff(
                    tmp_path / f"bff{i}",
                    redis_url=redis_process.url,
                    provider=provider,
                    upstream=upstream,
                    refresh_lock_lease=lease,
                    oidc_timeout=oidc_timeout,
                )
            )
            for i in range(count)
        ]
        yield [bff.port for bff in bffs], [bff.config for bff in bffs]


@pytest.mark.parametrize(("lease", "idp_delay"), [("5s", 0.0), ("300ms", 1.5)], ids=["normal-idp", "slow-idp"])
async def test_parallel_requests_through_three_processes_refresh_exactly_once(
    tmp_path: Path, redis_process: RedisProcess, idp: TestProvider, token_upstream: str, lease: str, idp_delay: float
) -> None:
    with running_bffs(tmp_path, PROCESSES, redis_process, idp, token_upstream, lease=lease) as (ports, configs):
        cookie = await log_in(ports[0])
        old_token = await expire_session_token(redis_process.url, configs[0], cookie)
        idp.token_delay = idp_delay

        async with httpx.AsyncClient(timeout=30) as http:
            responses = await asyncio.wait_for(
                asyncio.gather(
                    *(
                        http.get(
                            f"http://127.0.0.1:{ports[i % PROCESSES]}/api/items",
                            headers={**XHR, "cookie": f"__Host-bff={cookie}"},
                        )
                        for i in range(REQUESTS)
                    )
                ),
                60,
            )
        statuses = [r.status_code for r in responses]
        assert statuses == [200] * REQUESTS, [r.text for r in responses if r.status_code != 200][:3]
        tokens = {r.text for r in responses}
        assert len(tokens) == 1
        assert fingerprint(old_token) not in tokens
        assert idp.refresh_calls == 1
        assert idp.reuse_detected == 0


async def test_an_idp_slower_than_the_timeout_never_holds_a_request_past_its_deadline(
    tmp_path: Path, redis_process: RedisProcess, idp: TestProvider, token_upstream: str
) -> None:
    """Two ``bff serve`` processes, ``[oidc] timeout = 1s``, a lease of 300 ms, an IdP that answers the refresh
    after 2.5 s: clients keep calling through both until they get a 200. Every request answers within its
    deadline plus a bound; the lock's lease stays a lease while it is renewed, and the lock is gone at the end."""
    timeout, bound, lease = 1.0, 1.0, 0.3
    with running_bffs(
        tmp_path,
        2,
        redis_process,
        idp,
        token_upstream,
        lease=f"{lease * 1000:g}ms",
        oidc_timeout=f"{timeout:g}s",
    ) as (ports, configs):
        cookie = await log_in(ports[0])
        old_token = await expire_session_token(redis_process.url, configs[0], cookie)
        idp.token_delay = 2.5

        store = RedisStore.from_url(redis_process.url)
        sessions = SessionManager(store, load_config(configs[0]).session)
        session_id = sessions.session_id_from_cookie(cookie)
        assert session_id is not None
        lock_key = sessions.refresh_lock_key(sessions.key_for(session_id))
        lease_seen: list[float] = []
        loop = asyncio.get_running_loop()

        async def client(http: httpx.AsyncClient, n: int) -> list[tuple[float, int, str]]:
            seen: list[tuple[float, int, str]] = []
            while not seen or seen[-1][1] == 503:
                started = loop.time()
                response = await http.get(
                    f"http://127.0.0.1:{ports[n % 2]}/api/items", headers={**XHR, "cookie": f"__Host-bff={cookie}"}
                )
                seen.append((loop.time() - started, response.status_code, response.text))
                if response.status_code == 503:
                    assert response.headers["retry-after"] == "1"
                    await asyncio.sleep(0.05 * (n % 5))
            return seen

        async def watch_the_lock(done: asyncio.Event) -> None:
            while not done.is_set():
                remaining = await store.ttl(lock_key)
                if remaining is not None:
                    lease_seen.append(remaining)
                await asyncio.sleep(0.05)

        try:
            done = asyncio.Event()
            watcher = asyncio.ensure_future(watch_the_lock(done))
            async with httpx.AsyncClient(timeout=30) as http:
                results = await asyncio.wait_for(asyncio.gather(*(client(http, n) for n in range(20))), 60)
            done.set()
            await asyncio.wait_for(watcher, 5)
            assert await store.ttl(lock_key) is None  # released, not left renewed by a renewer that never stops
        finally:
            await store.aclose()
        answers = [answer for seen in results for answer in seen]
        assert all(took < timeout + bound for took, _, _ in answers), max(took for took, _, _ in answers)
        assert {status for _, status, _ in answers} == {200, 503}
        assert {text for _, status, text in answers if status == 200} - {fingerprint(old_token)}
        assert len({text for _, status, text in answers if status == 200}) == 1
        assert lease_seen  # the lock was held while the IdP took its time ...
        assert max(lease_seen) <= lease  # ... under a lease that was renewed, never extended beyond it
        assert idp.refresh_calls == 1
        assert idp.reuse_detected == 0
