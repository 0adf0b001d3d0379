"""A real ``bff serve --workers 2 --access-log`` with ``[logging] format = "json"`` through real traffic: a login at
the test OpenID Provider, proxied calls, a token refresh, refused requests carrying credentials where they do not
belong, hostile raw paths, a logout. Every line the processes write (supervisor and workers, bff's loggers, its
access lines and uvicorn's) must parse as one JSON object, and none may hold a token, code, state, client secret,
session key, cookie or query value; the access lines carry the fields an operator filters on."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import pytest

from tests.support.bff_process import expire_session_token, wait_ready
from tests.support.browser import Browser
from tests.support.configs import SESSION_KEY, write_config
from tests.support.leak_guard import GUARD
from tests.support.oidc_provider import TestProvider
from tests.support.redis_server import RedisProcess
from tests.support.servers import free_port

XHR = {"X-CSRF": "1"}
HOSTILE = "hostileSecretValue-0123456789abcdef"
HOSTILE_JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJob3N0aWxlIn0.aG9zdGlsZS1zaWduYXR1cmU"


def start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """``bff serve`` with two workers and the access log; warnings on, so they must come out as JSON too."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "always"}
    command = [sys.executable, "-m", "bff", "serve", "--config", str(config), "--workers", "2", "--access-log"]
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


#: Raw request targets a browser would never send: quotes, backslashes, control-like escapes, bytes that are not
#: UTF-8, a secret in the query; bff answers each (400, 404 or the route) and logs one valid JSON line for it.
HOSTILE_TARGETS = (
    b'/api/items/"},"injected":"x',
    b"/api/items/a\\b\\u0000",
    b"/api/items/%0d%0aX-Injected:%20yes?access_token=" + HOSTILE.encode(),
    b"/api/items/\xff\xfe\xc3\x28",
    b"/api/items/%2e%2e/%2e%2e/etc?code=" + HOSTILE.encode(),
    b"/bff/nothing-here/\xe2\x80\xae?state=" + HOSTILE.encode(),
)


def raw_get(origin: str, target: bytes) -> None:
    """One request written byte for byte (httpx would normalise the target), answer read until close."""
    host, port = origin.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nX-CSRF: 1\r\nConnection: close\r\n\r\n")
        while sock.recv(65536):
            pass


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
        for target in HOSTILE_TARGETS:
            raw_get(origin, target)
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
    tmp_path: Path, redis_process: RedisProcess, idp: TestProvider, ok_upstream: str
) -> None:
    port = free_port()
    config = tmp_path / "bff.toml"
    write_config(
        config,
        port=port,
        redis_url=redis_process.url,
        idp_url=idp.issuer,
        client_secret=idp.client_secret or "",
        upstream=ok_upstream,
    )
    config.write_text(config.read_text().replace("[[routes]]", '[logging]\nformat = "json"\n\n[[routes]]', 1))
    origin = f"http://127.0.0.1:{port}"
    GUARD.watch_bff(origin)
    log = tmp_path / "bff.log"
    process = start(config, log)
    try:
        wait_ready(port, process, log)
        seen = await asyncio.wait_for(traffic(origin, redis_process.url, config, idp), 60)
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
    assert {"uvicorn.error", "bff.access"} <= loggers, loggers
    assert "uvicorn.access" not in loggers  # bff's own access line replaces uvicorn's
    assert all({"timestamp", "severity_text", "body", "logger"} <= r.keys() for r in records)
    access = [r for r in records if r["logger"] == "bff.access"]
    assert len(access) >= 9 + len(HOSTILE_TARGETS), access
    check_access_lines(access)

    secrets = {s.decode() for s in GUARD.secrets} | set(idp.issued_tokens())
    secrets |= {s for s in seen if len(s) >= 8}
    secrets |= {HOSTILE, HOSTILE_JWT, SESSION_KEY, idp.client_secret or HOSTILE}
    assert len(secrets) > 10
    found = sorted(GUARD.secrets.get(s.encode(), f"planted or browser-seen {s[:6]}...") for s in secrets if s in text)
    assert not found, f"secrets in the log: {found}"


def check_access_lines(access: list[dict[str, object]]) -> None:
    """The access lines' fields: routes from the closed set, never a query, ids and handles where they belong."""
    fields = {
        "timestamp",
        "request_id",
        "trace_id",
        "span_id",
        "http.route",
        "http.request.method",
        "url.path",
        "http.response.status_code",
        "bff.upstream.status_code",
        "duration_ms",
        "bff.upstream.duration_ms",
        "http.request.body.size",
        "http.response.body.size",
        "bff.error",
        "bff.session",
    }
    for line in access:
        assert fields <= line.keys(), line
        assert line["http.route"] in {"/api", "/bff/login", "/bff/callback", "/bff/logout", "unmatched", "/readyz"}
        assert "?" not in str(line["url.path"])
        assert isinstance(line["request_id"], str)
        assert 0 < len(line["request_id"]) <= 64
    proxied = [r for r in access if r["http.route"] == "/api" and r["http.response.status_code"] == 200]
    assert len(proxied) >= 5
    assert all(r["bff.upstream.status_code"] == 200 and r["bff.error"] is None for r in proxied)
    handles = {r["bff.session"] for r in proxied}
    assert len(handles) == 1
    assert isinstance(next(iter(handles)), str)
    assert len(str(next(iter(handles)))) == 12
    refused = [r for r in access if r["bff.error"] == "csrf"]
    assert refused
    assert all(r["http.response.status_code"] == 401 for r in refused)
    assert refused[0]["bff.upstream.status_code"] is None
    paths = {str(r["url.path"]) for r in access}
    assert '/api/items/"},"injected":"x' in paths
    assert all("injected" not in key for r in access for key in r)
