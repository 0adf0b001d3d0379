"""Helpers for tests that run ``bff serve`` as a subprocess: start it, wait until it is ready, log in through it,
reach into its sessions."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bff.config import load_config
from bff.session.manager import SessionManager
from bff.session.redis_store import RedisStore
from tests.support.browser import Browser
from tests.support.leak_guard import GUARD
from tests.support.sessions import expire_access_token


def start_bff(
    config: Path,
    port: int,
    log: Path,
    *extra: str,
    release: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """``bff serve --config config`` (and ``extra`` arguments, e.g. ``--workers 2``) on ``port`` (which the config
    names), output to ``log``; the leak guard watches what it answers. ``release``: a directory holding another
    release's ``bff`` package (``tests.support.previous_release``), run from there as ``python -m bff.cli`` with the
    same interpreter and dependencies; None: this tree's ``bff``. ``env``: more environment variables for the
    process."""
    GUARD.watch_bff(f"http://127.0.0.1:{port}")
    env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
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
