"""``bff serve`` under test: its config, its start (timed to ``/readyz`` 200), a real login, and reaching into its
sessions (through a ``SessionManager`` of the benchmark's own: same key ring, same Redis) to expire a token."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urljoin

import httpx

from bff.config import load_config
from bff.session.manager import SessionManager
from bff.session.redis_store import RedisStore
from tests.bench.idp import PASSWORD, USERNAME
from tests.bench.system import CpuPlan, Process, pinned, process_tree
from tests.support.browser import Browser
from tests.support.realistic_tokens import realistic_tokens
from tests.support.sessions import expire_access_token

#: The request the benchmark sends: a proxied API call (bff adds the bearer token; the upstream ignores it).
API_PATH = "/api/orders/7"
COOKIE_NAME = "__Host-bff"
_LOGIN_FORM = re.compile(r"name='tx' value='([^']+)'")
_FORM = {"content-type": "application/x-www-form-urlencoded"}


@dataclass
class Bff:
    name: str
    url: str
    config: Path
    redis_url: str
    process: Process
    #: Seconds from the process start to the first ``/readyz`` 200.
    ready_seconds: float
    cookie: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Cookie": f"{COOKIE_NAME}={self.cookie}", "X-CSRF": "1"}

    async def log_in(self) -> None:
        """Log in through the IdP as a browser would (``/bff/login`` -> IdP -> ``/bff/callback``)."""
        self.cookie = await log_in_through_idp(self.name, f"{self.url}/bff/login", self.url, COOKIE_NAME)

    async def worker_pids(self, workers: int) -> list[int]:
        """The processes that serve requests, once all ``workers`` are up: the process itself for one worker, else
        uvicorn's spawned workers (not the supervisor, nor multiprocessing's resource tracker)."""
        if workers == 1:
            return [self.process.pid]
        deadline = time.monotonic() + 15
        while True:
            spawned = [pid for pid in process_tree(self.process.pid)[1:] if b"multiprocessing.spawn" in _cmdline(pid)]
            if len(spawned) >= workers:
                return sorted(spawned)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: {len(spawned)} of {workers} workers started:\n{self.process.tail()}")
            await asyncio.sleep(0.05)

    async def _sessions(self) -> tuple[SessionManager, RedisStore]:
        store = RedisStore.from_url(self.redis_url)
        return SessionManager(store, load_config(self.config).session), store

    async def expire_access_token(self) -> str:
        """Make the session's access token look expired; returns the expired token."""
        sessions, store = await self._sessions()
        try:
            session_id = sessions.session_id_from_cookie(self.cookie)
            assert session_id is not None
            return (await expire_access_token(sessions, session_id)).session.tokens.access_token
        finally:
            await store.aclose()

    async def create_sessions(self, n: int) -> list[str]:
        """``n`` more sessions, each of its own user, straight through a ``SessionManager``; their cookie values."""
        sessions, store = await self._sessions()
        try:
            now = int(time.time())
            cookies = []
            for i in range(n):
                sub = f"bench-user-{i}"
                tokens = dataclasses.replace(realistic_tokens(sub, f"sid-{i}", now), expires_at=now + 3600)
                session_id, _ = await sessions.create(sub=sub, sid=f"sid-{i}", claims={"sub": sub}, tokens=tokens)
                cookies.append(sessions.cookie_value(session_id))
            return cookies
        finally:
            await store.aclose()

    async def access_token(self) -> str | None:
        sessions, store = await self._sessions()
        try:
            session_id = sessions.session_id_from_cookie(self.cookie)
            loaded = None if session_id is None else await sessions.load(session_id, slide=False)
            return None if loaded is None else loaded.session.tokens.access_token
        finally:
            await store.aclose()


async def log_in_through_idp(name: str, start: str, origin: str, cookie_name: str) -> str:
    """Follow ``start`` to the reference IdP's login form, sign in as the benchmark's user, follow the redirects
    back; the value of the cookie ``cookie_name`` that ``origin`` set (bff's, or a peer's session cookie)."""
    browser = Browser()
    try:
        hops = await browser.follow(start)
        page = hops[-1]
        if page.status_code == 200 and (form := _LOGIN_FORM.search(page.text)):  # the reference IdP's login page
            fields = {"tx": form.group(1), "username": USERNAME, "password": PASSWORD}
            done = await browser.request(
                "POST", urljoin(str(page.url), "/login"), headers=_FORM, content=urlencode(fields).encode()
            )
            hops.append(done)
            if "location" in done.headers:
                hops += await browser.follow(urljoin(str(done.url), done.headers["location"]))
        cookie = browser.cookies(origin).get(cookie_name)
    finally:
        await browser.aclose()
    if cookie is None:
        trail = ", ".join(f"{hop.status_code} {hop.url.path}" for hop in hops)
        raise RuntimeError(f"{name}: the login did not end with a session ({trail}): {hops[-1].text[:300]}")
    return cookie


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


async def start_bff(
    name: str,
    *,
    python: str,
    config: Path,
    redis_url: str,
    port: int,
    workers: int,
    cores: Sequence[int],
    plan: CpuPlan,
    workdir: Path,
    source: Path,
    extra_env: Mapping[str, str] | None = None,
    module: str = "bff",
) -> Bff:
    """Start ``bff serve`` from the source tree ``source`` and wait for ``/readyz`` 200 (timed); ``module``: what
    ``python -m`` runs, ``bff`` or a launcher that takes the same arguments (``tests.bench.limits_off``)."""
    command = [python, "-m", module, "serve", "--config", str(config), "--workers", str(workers)]
    command += ["--log-level", "warning"]
    env = {**os.environ, "PYTHONPATH": str(source), "PYTHONDONTWRITEBYTECODE": "1", **(extra_env or {})}
    process = Process(name, pinned(command, cores, plan), workdir / f"{name}.log", env=env, cwd=str(source))
    url = f"http://127.0.0.1:{port}"
    deadline = process.started + 60
    async with httpx.AsyncClient(timeout=1) as http:
        while True:
            process.check_alive()
            try:
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                process.stop()
                raise RuntimeError(f"{name} never became ready:\n{process.tail()}")
            await asyncio.sleep(0.01)
    ready = time.monotonic() - process.started
    return Bff(name=name, url=url, config=config, redis_url=redis_url, process=process, ready_seconds=ready)
