"""A real ``bff serve --workers 2 --access-log`` with ``[logging] format = "json"`` through real traffic: a login at
the test OpenID Provider, proxied calls, a token refresh, refused requests carrying credentials where they do not
belong, a logout. Every line the processes write (supervisor and workers, bff's loggers and uvicorn's) must parse
as one JSON object, and none may hold a token, code, state, client secret, session key or cookie value."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import pytest

from tests.support.asgi import ok_answer
from tests.support.bff_process import expire_session_token, wait_ready
from tests.support.browser import Browser
from tests.support.configs import SESSION_KEY, write_config
from tests.support.leak_guard import GUARD
from tests.support.oidc_provider import TestProvider, running
from tests.support.redis_server import RedisProcess
from tests.support.servers import free_port, serve

XHR = {"X-CSRF": "1"}
HOSTILE = "hostileSecretValue-0123456789abcdef"
HOSTILE_JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJob3N0aWxlIn0.aG9zdGlsZS1zaWduYXR1cmU"


@pytest.fixture
def upstream() -> Iterator[str]:
    with serve(ok_answer, lifespan="off") as url:
        yield url


@pytest.fixture
def provider() -> Iterator[TestProvider]:
    with running(TestProvider()) as provider:
        yield provider


def start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """``bff serve`` with two workers and the access log; warnings on, so they must come out as JSON too."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "always"}
    command = [sys.executable, "-m", "bff", "serve", "--config", str(config), "--workers", "2", "--access-log"]
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, so the shutdown lines are written too; killed if it hangs."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


async def traffic(origin: str, redis_url: str, config: Path, provider: TestProvider) -> list[str]:
    """Drive the flows; returns the codes, states and cookie values the browser saw."""
    seen: list[str] = []
    browser = Browser()
    try:
        hops = await browser.follow(f"{origin}/bff/login")
        for hop in hops:
            location = hop.headers.get("location", "")
            seen.extend(v for k, v in parse_qsl(urlsplit(location).query) if k in ("code", "state"))
        cookie = browser.cookies(origin)["__Host-bff"]
        for _ in range(3):
            assert (await browser.get(f"{origin}/api/items", headers=XHR)).status_code == 200
        await expire_session_token(redis_url, config, cookie)
        refreshes = provider.refresh_calls
        assert (await browser.get(f"{origin}/api/items?x=1", headers=XHR)).status_code == 200
        assert provider.refresh_calls == refreshes + 1
        # Credentials where they do not belong: in the query (logged by the access log), in a refused request.
        query = f"access_token={HOSTILE}&code={HOSTILE}&t={HOSTILE_JWT}&r={quote('/x?code=' + HOSTILE, safe='')}"
        assert (await browser.get(f"{origin}/api/items?{query}", headers=XHR)).status_code == 200
        assert (await browser.get(f"{origin}/api/items?{query}")).status_code >= 400  # no X-CSRF
        bad = await browser.http.get(f"{origin}/bff/callback?code={HOSTILE}&state={HOSTILE}")
        assert bad.status_code >= 400
        raw = await browser.http.get(
            f"{origin}/api/items", headers={**XHR, "authorization": f"Bearer {HOSTILE}", "cookie": f"x={HOSTILE}"}
        )
        assert raw.status_code == 401
        assert (await browser.request("POST", f"{origin}/bff/logout", headers=XHR)).status_code < 400
        for header in browser.set_cookie_headers:
            value = header.split(";", 1)[0].partition("=")[2]
            if value:
                seen.append(value)
        seen.append(cookie)
    finally:
        await browser.aclose()
    return seen


async def test_every_line_of_a_json_run_is_json_and_holds_no_secret(
    tmp_path: Path, redis_process: RedisProcess, provider: TestProvider, upstream: str
) -> None:
    port = free_port()
    config = tmp_path / "bff.toml"
    write_config(
        config,
        port=port,
        redis_url=redis_process.url,
        idp_url=provider.issuer,
        client_secret=provider.client_secret or "",
        upstream=upstream,
    )
    config.write_text(config.read_text().replace("[[routes]]", '[logging]\nformat = "json"\n\n[[routes]]', 1))
    origin = f"http://127.0.0.1:{port}"
    GUARD.watch_bff(origin)
    log = tmp_path / "bff.log"
    process = start(config, log)
    try:
        wait_ready(port, process, log)
        seen = await asyncio.wait_for(traffic(origin, redis_process.url, config, provider), 60)
    finally:
        stop(process)

    text = log.read_text(encoding="utf-8")
    lines = text.splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"line {number} is not JSON: {line[:300]!r}")
        assert isinstance(records[-1], dict), line[:300]
    loggers = {r["logger"] for r in records}
    assert {"uvicorn.error", "uvicorn.access"} <= loggers, loggers
    assert all({"timestamp", "severity_text", "body", "logger"} <= r.keys() for r in records)
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    assert len(access) >= 9, access

    secrets = {s.decode() for s in GUARD.secrets} | set(provider.issued_tokens())
    secrets |= {s for s in seen if len(s) >= 8}
    secrets |= {HOSTILE, HOSTILE_JWT, SESSION_KEY, provider.client_secret or HOSTILE}
    assert len(secrets) > 10
    found = sorted(GUARD.secrets.get(s.encode(), "planted or browser-seen value") for s in secrets if s in text)
    assert not found, f"secrets in the log: {found}"
