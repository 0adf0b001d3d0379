"""Helpers for tests that run ``bff serve`` as a subprocess: start it, wait until it is ready, log in through it,
reach into its sessions."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bff.config import load_config
from bff.session.manager import SessionManager
from bff.session.redis_store import RedisStore
from tests.support.browser import Browser
from tests.support.configs import write_config
from tests.support.leak_guard import GUARD
from tests.support.oidc_provider import TestProvider
from tests.support.servers import free_port
from tests.support.sessions import expire_access_token


def start_bff(
    config: Path,
    port: int,
    log: Path,
    *extra: str,
    release: Path | None = None,
    env: Mapping[str, str] | None = None,
    inherit_env: bool = True,
) -> subprocess.Popen[bytes]:
    """``bff serve --config config`` (and ``extra`` arguments, e.g. ``--workers 2``) on ``port`` (which the config
    names), output to ``log``; the leak guard watches what it answers. ``release``: a directory holding another
    release's ``bff`` package (``tests.support.previous_release``), run from there as ``python -m bff.cli`` with the
    same interpreter and dependencies; None: this tree's ``bff``. ``env``: more environment variables for the
    process; with ``inherit_env=False`` its whole environment instead of this process's."""
    GUARD.watch_bff(f"http://127.0.0.1:{port}")
    env = {**(os.environ if inherit_env else {}), **(env or {}), "PYTHONUNBUFFERED": "1"}
    if release is not None:
        # python -m puts the working directory first on sys.path: run from the release so its bff is found first.
        env["PYTHONPATH"] = str(release)
    module = "bff" if release is None else "bff.cli"
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", module, "serve", "--config", str(config), *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=release,
        )


@contextlib.contextmanager
def running_bff(
    config: Path, port: int, log: Path, *extra: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """:func:`start_bff`, ready (:func:`wait_ready`) when entered, terminated when left."""
    process = start_bff(config, port, log, *extra, env=env)
    try:
        wait_ready(port, process, log)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - only a hung bff gets here
            process.kill()


async def log_in(port: int) -> str:
    """Log in through the instance on ``port`` (the test OpenID Provider consents at once); returns the session
    cookie, which every instance sharing the store and key ring accepts."""
    browser = Browser()
    try:
        await browser.follow(f"http://127.0.0.1:{port}/bff/login")
        return browser.cookies(f"http://127.0.0.1:{port}")["__Host-bff"]
    finally:
        await browser.aclose()


def wait_ready(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    """Until ``/readyz`` answers 200; fails the test with the tail of ``log`` if bff exits or is not ready in 30 s."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"bff exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"bff on port {port} never became ready:\n{log.read_text()[-3000:]}")


async def expire_session_token(redis_url: str, config: Path, cookie: str) -> str:
    """Expire the access token of the session behind ``cookie``, as the bff processes see it (same key ring, same
    store); returns that token."""
    store = RedisStore.from_url(redis_url)
    try:
        sessions = SessionManager(store, load_config(config).session)
        session_id = sessions.session_id_from_cookie(cookie)
        assert session_id is not None
        return (await expire_access_token(sessions, session_id)).session.tokens.access_token
    finally:
        await store.aclose()


def configure(
    config: Path,
    port: int,
    *,
    redis_url: str,
    provider: TestProvider,
    upstream: str,
    metrics_port: int | None = None,
    extra: str = "",
    **options: Any,
) -> None:
    """:func:`tests.support.configs.write_config` for a client of ``provider``, then ``[metrics] listen`` on
    ``metrics_port`` (if given) and the TOML ``extra`` appended; ``options``: write_config's own."""
    write_config(
        config,
        port=port,
        redis_url=redis_url,
        idp_url=provider.issuer,
        client_secret=provider.client_secret or "",
        upstream=upstream,
        **options,
    )
    metrics = "" if metrics_port is None else f'\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
    config.write_text(config.read_text() + metrics + (f"\n{extra}\n" if extra else ""))


def stop(process: subprocess.Popen[bytes], within: float = 20) -> None:
    """SIGTERM, then SIGKILL if ``process`` has not exited ``within`` seconds."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(within)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@dataclass
class RunningBff:
    """A ``bff serve`` process started by :func:`serving_bff`."""

    process: subprocess.Popen[bytes]
    port: int
    config: Path
    log: Path
    metrics: int | None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_port(self) -> int:
        assert self.metrics is not None, "serving_bff(metrics=True) starts a metrics listener"
        return self.metrics


@contextmanager
def serving_bff(
    tmp_path: Path,
    *,
    redis_url: str,
    provider: TestProvider,
    upstream: str,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    inherit_env: bool = True,
    metrics: bool = False,
    extra: str = "",
    **options: Any,
) -> Iterator[RunningBff]:
    """``bff serve`` (with ``args``, e.g. ``--workers 2``) on a free port, its config ``tmp_path / "bff.toml"``
    written by :func:`configure` (``metrics``: a metrics listener on another free port), ready when entered and
    stopped by :func:`stop` on exit. A failure inside carries the tail of the process's log."""
    port = free_port()
    metrics_port = free_port() if metrics else None
    config, log = tmp_path / "bff.toml", tmp_path / "bff.log"
    configure(
        config,
        port,
        redis_url=redis_url,
        provider=provider,
        upstream=upstream,
        metrics_port=metrics_port,
        extra=extra,
        **options,
    )
    process = start_bff(config, port, log, *args, env=env, inherit_env=inherit_env)
    try:
        wait_ready(port, process, log)
        try:
            yield RunningBff(process, port, config, log, metrics_port)
        except (Exception, pytest.fail.Exception) as error:
            error.add_note(f"bff log tail:\n{log.read_text()[-3000:]}")
            raise
    finally:
        stop(process)


def scrape(metrics_port: int) -> str:
    """One scrape of the metrics listener on ``metrics_port``: the Prometheus text; fails the test unless 200."""
    answer = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
    assert answer.status_code == 200, f"/metrics answered {answer.status_code}: {answer.text[:300]}"
    return answer.text
