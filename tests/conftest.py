"""Fixtures shared by the whole suite. Keep this file to fixture declarations; logic lives in ``tests/support``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from uuid import uuid4

import pytest

from bff.session.memory_store import MemoryStore
from bff.session.redis_store import RedisStore
from tests.support.asgi import ok_answer
from tests.support.browser import Browser
from tests.support.clock import FakeClock
from tests.support.leak_guard import LeakGuard, install, verdict
from tests.support.oidc_provider import TestProvider, running
from tests.support.redis_server import RedisProcess, require_redis_server, session_redis_url
from tests.support.servers import serve


@pytest.fixture(scope="session", autouse=True)
def leak_guard_installed() -> Iterator[LeakGuard]:
    """The leak guard watches bff's answers and the IdP traffic of the whole session (``tests.support.leak_guard``)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield install(monkeypatch)


@pytest.fixture(autouse=True)
def leak_guard(leak_guard_installed: LeakGuard) -> Iterator[LeakGuard]:
    """Fails every test in which an answer of bff held a token, code or secret it knows of."""
    leak_guard_installed.reset()
    yield leak_guard_installed
    verdict(leak_guard_installed)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of the suite's Redis: ``$BFF_TEST_REDIS_URL``, or a ``redis-server`` started for the session."""
    with session_redis_url() as url:
        yield url


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """``redis+cluster://`` URL of a one-node cluster (``$BFF_TEST_REDIS_CLUSTER_URL`` or started here)."""
    with session_redis_url("cluster") as url:
        yield url


@pytest.fixture(scope="session")
def redis_sentinel_url() -> Iterator[str]:
    """``redis+sentinel://`` URL of a sentinel watching a master (``$BFF_TEST_REDIS_SENTINEL_URL`` or started here)."""
    with session_redis_url("sentinel") as url:
        yield url


@pytest.fixture
def redis_process() -> Iterator[RedisProcess]:
    """A private, running ``redis-server`` that the test may ``stop()`` and ``start()``; stopped at teardown."""
    with RedisProcess(require_redis_server()) as server:
        yield server


@pytest.fixture
def idp() -> Iterator[TestProvider]:
    """The test OpenID Provider on loopback, for this test alone."""
    with running(TestProvider()) as provider:
        yield provider


@pytest.fixture
def ok_upstream() -> Iterator[str]:
    """The URL of an upstream on loopback that answers every request ``200 ok``."""
    with serve(ok_answer, lifespan="off") as url:
        yield url


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[RedisStore]:
    """A ``RedisStore`` on the suite's Redis, under a key prefix of its own (tests share the server)."""
    store = RedisStore.from_url(redis_url, prefix=f"t{uuid4().hex}:")
    yield store
    await store.aclose()


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def memory_store(fake_clock: FakeClock) -> AsyncIterator[MemoryStore]:
    """A ``MemoryStore`` on ``fake_clock``: advance the clock to expire keys."""
    store = MemoryStore(clock=fake_clock)
    yield store
    await store.aclose()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """A :class:`Browser` with an empty cookie jar; closed at teardown."""
    b = Browser()
    yield b
    await b.aclose()


@pytest.fixture
async def browsers() -> AsyncIterator[Callable[[], Browser]]:
    """Makes as many browsers as the test asks for; all closed at teardown."""
    made: list[Browser] = []

    def make() -> Browser:
        made.append(Browser())
        return made[-1]

    yield make
    for browser in made:
        await browser.aclose()
