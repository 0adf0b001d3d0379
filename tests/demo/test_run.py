"""``bff demo``: the configuration it builds, ``--check`` (CI's smoke test), a port already taken, and the whole
system on free ports: log in at the reference IdP, call the demo API through bff, log out everywhere, stop on
SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin

import httpx
import pytest

from bff.cli import main
from bff_devtools.demo.run import SPA_DIR, DemoOptions, build_apps, build_bff_config, run_demo
from tests.support.browser import Browser
from tests.support.devidp import FORM, login_tx
from tests.support.servers import free_port

BOUND = 30


def _options(**overrides: object) -> DemoOptions:
    ports = {"port": free_port(), "idp_port": free_port(), "api_port": free_port()}
    return DemoOptions(**{**ports, **overrides})  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _no_logging_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    """``bff demo`` configures the root logger for a terminal; in tests pytest owns logging."""
    monkeypatch.setattr("bff.telemetry.logs.configure_logging", lambda level="info", format="text": None)


def test_the_bff_config_of_the_demo() -> None:
    options = _options(redis_url="redis://127.0.0.1:6399/3")
    config = build_bff_config(options)
    assert config.server.public_origin == f"http://localhost:{options.port}"
    assert config.oidc.issuer == f"http://localhost:{options.idp_port}"
    assert config.oidc.redirect_uri == f"http://localhost:{options.port}/bff/callback"
    assert config.session.store == "redis://127.0.0.1:6399/3"
    assert [(r.path, r.token) for r in config.routes] == [
        ("/api/public", "none"),
        ("/api/reports", "user"),
        ("/api", "user"),
    ]
    assert [r.exchange.audience if r.exchange else None for r in config.routes] == [None, "demo-reports", None]
    assert all(r.upstream.startswith(f"http://127.0.0.1:{options.api_port}") for r in config.routes)
    assert config.frontend is not None
    assert config.frontend.directory == str(SPA_DIR)
    assert build_bff_config(_options()).session.store == "memory://"


def test_secrets_are_random_per_run_unless_given() -> None:
    first, second = DemoOptions(), DemoOptions()
    assert first.session_key != second.session_key
    assert first.client_secret != second.client_secret
    assert len(first.session_key) >= 32
    assert "session_key" not in repr(first)
    env = {"BFF_SESSION_KEY": "s" * 40, "BFF_CLIENT_SECRET": "c" * 40, "REDIS_URL": "redis://127.0.0.1:6379/0"}
    given = DemoOptions.from_env(env, port=8001)
    assert (given.session_key, given.client_secret, given.redis_url, given.port) == (
        "s" * 40,
        "c" * 40,
        "redis://127.0.0.1:6379/0",
        8001,
    )


@contextlib.contextmanager
def _taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_taken_port_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with _taken_port() as port:
        code = main(["demo", "--check", "--port", str(port), "--idp-port", str(free_port())])
    assert code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_check_starts_everything_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    options = _options()
    argv = ["demo", "--check", "--port", str(options.port), "--idp-port", str(options.idp_port)]
    assert main([*argv, "--api-port", str(options.api_port)]) == 0
    assert "bff demo --check: OK" in capsys.readouterr().out
    for port in (options.port, options.idp_port, options.api_port):  # everything stopped and released its port
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine, a listener is not
            sock.bind(("127.0.0.1", port))


def test_doctor_runs_bff_doctor_against_the_demo(capsys: pytest.CaptureFixture[str]) -> None:
    """`bff demo --doctor`: no WARN, no FAIL (memory store: the Redis checks SKIP; plain http on localhost: HSTS)."""
    options = _options()
    argv = ["demo", "--doctor", "--port", str(options.port), "--idp-port", str(options.idp_port)]
    assert main([*argv, "--api-port", str(options.api_port)]) == 0
    table = capsys.readouterr().out
    assert "PASS  client.credentials" in table
    assert " 0 WARN, 0 FAIL," in table


@pytest.mark.redis
def test_check_with_redis(redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """REDIS_URL puts bff's sessions and the IdP's state in Redis; bff is ready only once the store answers."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    options = _options()
    argv = ["demo", "--check", "--port", str(options.port), "--idp-port", str(options.idp_port)]
    assert main([*argv, "--api-port", str(options.api_port)]) == 0
    assert "store redis://" in capsys.readouterr().out


def test_check_fails_when_redis_does_not_answer(capsys: pytest.CaptureFixture[str]) -> None:
    options = _options(redis_url=f"redis://127.0.0.1:{free_port()}/0", ready_timeout=2.0)
    assert asyncio.run(run_demo(options, check=True)) == 1
    assert "bff is not ready" in capsys.readouterr().err


async def _log_in(browser: Browser, options: DemoOptions, username: str, password: str) -> httpx.Response:
    """The SPA's login, as the browser does it: /bff/login -> the IdP's form -> the callback -> the SPA."""
    hops = await browser.follow(f"{options.public_origin}/bff/login?returnTo=/")
    form = hops[-1]
    assert (form.status_code, str(form.url).split("?")[0]) == (200, f"{options.issuer}/authorize")
    body = urlencode({"tx": login_tx(form), "username": username, "password": password}).encode()
    redirect = await browser.request("POST", f"{options.issuer}/login", headers=FORM, content=body)
    assert redirect.status_code in (302, 303), redirect.text
    return (await browser.follow(urljoin(options.issuer, redirect.headers["location"])))[-1]


async def _wait_ready(client: httpx.AsyncClient, options: DemoOptions, demo: asyncio.Task[int]) -> None:
    for _ in range(BOUND * 10):
        with contextlib.suppress(httpx.HTTPError):
            if (await client.get(f"http://127.0.0.1:{options.port}/readyz")).status_code == 200:
                return
        assert not demo.done(), demo
        await asyncio.sleep(0.1)
    raise AssertionError("bff demo did not become ready")


async def test_the_demo_end_to_end_until_sigterm(capsys: pytest.CaptureFixture[str]) -> None:
    options = _options()
    demo = asyncio.create_task(run_demo(options))
    browser = Browser()
    try:
        await _wait_ready(browser.http, options, demo)
        await asyncio.sleep(0.2)  # the banner is printed right after the readiness checks
        out = capsys.readouterr().out
        assert f"http://localhost:{options.port}/" in out
        assert "alice / wonderland (role admin)" in out
        assert "bob / builder (role user)" in out

        spa = await _log_in(browser, options, "alice", "wonderland")
        assert (spa.status_code, spa.url.path) == (200, "/")
        assert 'id="call-me"' in spa.text
        csrf = {"X-CSRF": "1"}
        user = (await browser.get(f"{options.public_origin}/bff/user", headers=csrf)).json()
        assert (user["sub"], user["role"]) == ("alice-0001", "admin")
        me = await browser.get(f"{options.public_origin}/api/me", headers=csrf)
        assert (me.status_code, me.json()["sub"], me.json()["role"]) == (200, "alice-0001", "admin")
        assert (await browser.get(f"{options.public_origin}/api/admin/stats", headers=csrf)).status_code == 200
        # The reports API takes only tokens for its own audience: bff exchanges alice's token for one.
        reports = await browser.get(f"{options.public_origin}/api/reports/summary", headers=csrf)
        assert reports.status_code == 200, reports.text
        assert (reports.json()["owner"], reports.json()["audience"]) == ("alice-0001", "demo-reports")

        # Log out everywhere: a password change at the IdP ends the user's sessions, bff's included.
        admin = (await browser.get(f"{options.issuer}/admin/api/session")).json()
        changed = await browser.request(
            "POST",
            f"{options.issuer}/admin/api/users/alice/password",
            headers={"x-csrf-token": admin["csrf_token"], "content-type": "application/json"},
            content=json.dumps({"password": "a-brand-new-password"}).encode(),
        )
        assert changed.status_code == 200, changed.text
        for _ in range(BOUND * 10):  # the back-channel logout reaches bff asynchronously
            after = await browser.get(f"{options.public_origin}/api/me", headers=csrf)
            if after.status_code == 401:
                break
            await asyncio.sleep(0.1)
        # The back-channel logout deleted the session, so bff finds none behind the cookie ("unauthenticated"); a
        # refresh that reached the IdP first would have failed with invalid_grant ("session_expired").
        assert after.status_code == 401
        assert after.json()["error"] in {"unauthenticated", "session_expired"}
        assert (await browser.get(f"{options.public_origin}/bff/user", headers=csrf)).status_code == 401
    finally:
        await browser.aclose()
        signal.raise_signal(signal.SIGTERM)  # run_demo's handler, not the default (which would end pytest)
        assert await asyncio.wait_for(demo, BOUND) == 0


@contextlib.contextmanager
def _started(*argv: str) -> Iterator[subprocess.Popen[str]]:
    """``bff ARGV`` in a child process (killed at the end if it is still running), stdout and stderr together."""
    command = [sys.executable, "-m", "bff", *argv]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        try:
            yield process
        finally:
            process.kill()


def test_bff_demo_stops_cleanly_on_ctrl_c() -> None:
    options = _options()
    ports = ["--port", str(options.port), "--idp-port", str(options.idp_port), "--api-port", str(options.api_port)]
    with _started("demo", *ports) as process:
        assert process.stdout is not None
        lines: list[str] = []
        while not any(line.startswith("bff demo is running") for line in lines):
            line = process.stdout.readline()
            assert line, "".join(lines)  # the process ended before it was ready
            lines.append(line)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=BOUND) == 0
        assert "Traceback" not in process.stdout.read()


def test_bff_demo_api_command() -> None:
    port = free_port()
    with _started(
        "demo-api", "--port", str(port), "--issuer", "http://127.0.0.1:9", "--log-level", "warning"
    ) as process:
        for _ in range(BOUND * 10):
            with contextlib.suppress(httpx.HTTPError):
                response = httpx.get(f"http://127.0.0.1:{port}/healthz")
                break
            assert process.poll() is None, process.communicate()[0]
            time.sleep(0.1)
        assert response.json() == {"status": "ok"}
        assert httpx.get(f"http://127.0.0.1:{port}/public/info").json()["issuer"] == "http://127.0.0.1:9"
        assert httpx.get(f"http://127.0.0.1:{port}/me").status_code == 401
        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal so that the exit status tells it
        assert process.wait(timeout=BOUND) in (0, -signal.SIGTERM)
        assert process.stdout is not None
        assert "Traceback" not in process.stdout.read()


def test_the_demo_passes_the_reuse_grace_window_to_its_idp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``bff demo --refresh-reuse-grace 30s`` shows an IdP that rotates again instead of revoking (0: strict)."""
    seen: list[DemoOptions] = []

    async def fake_run_demo(options: DemoOptions, *, check: bool) -> int:
        seen.append(options)
        return 0

    monkeypatch.setattr("bff_devtools.demo.run.run_demo", fake_run_demo)
    assert main(["demo", "--refresh-reuse-grace", "30s"]) == 0
    assert main(["demo"]) == 0
    assert [o.refresh_reuse_grace for o in seen] == [30.0, 0.0]

    import bff_devtools.devidp

    settings: list[object] = []
    real = bff_devtools.devidp.create_devidp_app

    def recording(devidp_settings: bff_devtools.devidp.DevIdPSettings, *args: Any, **kwargs: Any) -> Any:
        settings.append(devidp_settings)
        return real(devidp_settings, *args, **kwargs)

    monkeypatch.setattr(bff_devtools.devidp, "create_devidp_app", recording)

    build_apps(_options(refresh_reuse_grace=30.0), tmp_path)
    assert [getattr(s, "refresh_reuse_grace", None) for s in settings] == [30.0]


async def test_the_demo_with_dpop_binds_tokens_and_the_api_checks_proofs() -> None:
    """``bff demo --dpop``: the whole chain with DPoP (the demo API refuses a bound token without a valid proof)."""
    options = _options(dpop=True)
    demo = asyncio.create_task(run_demo(options))
    browser = Browser()
    try:
        await _wait_ready(browser.http, options, demo)
        await _log_in(browser, options, "alice", "wonderland")
        csrf = {"X-CSRF": "1"}
        for _ in range(2):  # a fresh proof each time (the API's jti replay cache)
            me = await browser.get(f"{options.public_origin}/api/me", headers=csrf)
            assert (me.status_code, me.json()["sub"]) == (200, "alice-0001"), me.text
    finally:
        await browser.aclose()
        signal.raise_signal(signal.SIGTERM)
        assert await asyncio.wait_for(demo, BOUND) == 0


def test_bff_demo_dpop_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[DemoOptions] = []

    async def fake_run_demo(options: DemoOptions, *, check: bool) -> int:
        seen.append(options)
        return 0

    monkeypatch.setattr("bff_devtools.demo.run.run_demo", fake_run_demo)
    assert main(["demo", "--dpop"]) == 0
    assert main(["demo"]) == 0
    assert [o.dpop for o in seen] == [True, False]
