"""A rolling update, for real: the previous release (``tests.support.previous_release``, extracted from git and run
as ``python -m bff.cli serve``) and this one (``bff serve``) as two processes on one Redis and one IdP that rotates
refresh tokens and revokes the whole family on reuse. Sessions cross between them both ways: a login on one, the
proxied call and the token refresh on the other, then back.

* ``write_format = 1`` (the default): everything works both ways, with exactly one refresh and no token reuse.
* ``write_format = 2``: this release reads both formats; the previous one answers 401 ``unauthenticated`` for every
  session this release wrote (to it a format-2 record is malformed) and leaves the record alone, so the session goes
  on working through this release. Hence docs/storage-formats.md: raise ``write_format`` only after the update.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import httpx
import pytest

from bff.config import load_config
from bff.session.manager import SessionManager
from bff.session.record import stored_format
from bff.session.redis_store import RedisStore
from tests.support.bff_process import expire_session_token, log_in, serving_bff
from tests.support.leak_guard import fingerprint
from tests.support.oidc_provider import TestProvider
from tests.support.previous_release import PREVIOUS_RELEASE, extract_previous_release
from tests.support.redis_server import RedisProcess

XHR = {"X-CSRF": "1"}


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = extract_previous_release(tmp_path_factory.mktemp(f"bff-{PREVIOUS_RELEASE}"))
    found = subprocess.run(
        [sys.executable, "-c", "import bff.session.record as r; print(r.__file__)"],
        cwd=tree,
        env={"PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(found).is_relative_to(tree), f"the previous release would import {found}"
    return tree


@contextmanager
def old_and_new(
    tmp_path: Path, previous: Path, redis: RedisProcess, provider: TestProvider, upstream: str, write_format: int
) -> Iterator[tuple[int, int, Path]]:
    """The previous release and this one, ready, each in its own directory of ``tmp_path`` (``old``, ``new``);
    yields (old port, new port, the old one's config: what the test writes itself with it is in format 1, as the
    previous release writes)."""
    serve = partial(serving_bff, redis_url=redis.url, provider=provider, upstream=upstream)
    # The previous release refuses keys it does not know: only this one gets write_format and the drain keys.
    with (
        serve(tmp_path / "old", release=previous, drain_delay=None, shutdown_timeout=None) as old,
        serve(
            tmp_path / "new", session_extra=f"write_format = {write_format}", drain_delay="0s", shutdown_timeout="2s"
        ) as new,
    ):
        yield old.port, new.port, old.config


async def call(http: httpx.AsyncClient, port: int, cookie: str) -> httpx.Response:
    return await http.get(f"http://127.0.0.1:{port}/api/items", headers={**XHR, "cookie": f"__Host-bff={cookie}"})


async def record_format(redis_url: str, config: Path, cookie: str) -> int:
    """The store format of the session record behind ``cookie``, as it sits in Redis."""
    store = RedisStore.from_url(redis_url)
    try:
        sessions = SessionManager(store, load_config(config).session)
        session_id = sessions.session_id_from_cookie(cookie)
        assert session_id is not None
        key = sessions.key_for(session_id)
        raw = await store.get(key)
        assert raw is not None, "the session record is gone"
        return stored_format(sessions._sessions.decrypt(raw, key.encode()))
    finally:
        await store.aclose()


async def test_with_write_format_1_sessions_cross_both_ways(
    tmp_path: Path, previous_release: Path, redis_process: RedisProcess, idp: TestProvider, token_upstream: str
) -> None:
    with old_and_new(tmp_path, previous_release, redis_process, idp, token_upstream, 1) as (old, new, config):
        async with httpx.AsyncClient(timeout=30) as http:
            for first, second in ((old, new), (new, old)):
                cookie = await log_in(first)
                assert await record_format(redis_process.url, config, cookie) == 1
                token = fingerprint(await expire_session_token(redis_process.url, config, cookie))
                assert await record_format(redis_process.url, config, cookie) == 1
                refreshes = idp.refresh_calls
                answer = await call(http, second, cookie)  # the second refreshes what the first wrote
                assert answer.status_code == 200, answer.text
                assert answer.text != token
                assert idp.refresh_calls == refreshes + 1
                assert await record_format(redis_process.url, config, cookie) == 1
                back = await call(http, first, cookie)  # and the first reads what the second rewrote
                assert back.status_code == 200, back.text
                assert back.text == answer.text
                assert idp.refresh_calls == refreshes + 1
        assert idp.reuse_detected == 0


async def test_with_write_format_2_the_previous_release_refuses_new_records_and_keeps_them(
    tmp_path: Path, previous_release: Path, redis_process: RedisProcess, idp: TestProvider, token_upstream: str
) -> None:
    with old_and_new(tmp_path, previous_release, redis_process, idp, token_upstream, 2) as (old, new, config):
        async with httpx.AsyncClient(timeout=30) as http:
            # A session from the previous release (format 1): this release reads it and refreshes it, in format 2.
            cookie = await log_in(old)
            assert (await call(http, new, cookie)).status_code == 200
            assert await record_format(redis_process.url, config, cookie) == 1
            token = fingerprint(await expire_session_token(redis_process.url, config, cookie))
            assert await record_format(redis_process.url, config, cookie) == 1
            answer = await call(http, new, cookie)
            assert answer.status_code == 200, answer.text
            assert answer.text != token
            assert await record_format(redis_process.url, config, cookie) == 2
            refused = await call(http, old, cookie)
            assert refused.status_code == 401
            assert refused.json()["error"] == "unauthenticated"
            assert "set-cookie" not in refused.headers  # the browser keeps its cookie
            again = await call(http, new, cookie)  # the record outlived the refusal
            assert again.status_code == 200, again.text
            assert again.text == answer.text

            # A session from this release (format 2): the same on the previous release, fine here.
            cookie = await log_in(new)
            assert await record_format(redis_process.url, config, cookie) == 2
            refused = await call(http, old, cookie)
            assert refused.status_code == 401
            assert (await call(http, new, cookie)).status_code == 200
        assert idp.refresh_calls == 1
        assert idp.reuse_detected == 0
    assert "session record is malformed" in (tmp_path / "old" / "bff.log").read_text()
