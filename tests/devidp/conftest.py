"""Fixtures of the development IdP's tests: a running IdP (memory store, or Redis where a module parametrizes
``backend``), a back-channel logout receiver and an OAuth client (in the suite's ``browser``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.browser import Browser
from tests.support.devidp import RESOURCE, IdP, LogoutReceiver, OAuthClient, client, logout_receiver, running_devidp


@pytest.fixture
def backend() -> str:
    """The IdP's store; a module runs against both with ``pytest.mark.parametrize("backend", BACKENDS)``."""
    return "memory"


@pytest.fixture(scope="session")
def shared_receiver() -> Iterator[tuple[LogoutReceiver, str]]:
    with logout_receiver() as running:
        yield running


@pytest.fixture
def receiver(shared_receiver: tuple[LogoutReceiver, str]) -> tuple[LogoutReceiver, str]:
    """A back-channel logout endpoint, empty at the start of the test. One server for the session (a server costs
    0.2 s to stop); no notification outlives its test, since the IdP awaits them before it answers."""
    with shared_receiver[0].lock:
        shared_receiver[0].tokens.clear()
    return shared_receiver


@pytest.fixture
def idp(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str, receiver: tuple[LogoutReceiver, str]
) -> Iterator[IdP]:
    """An IdP with one confidential client (``spa-bff``) whose back-channel logout URI is ``receiver``."""
    redis_url = request.getfixturevalue("redis_url") if backend == "redis" else None
    with running_devidp(
        tmp_path / "keys", (client(backchannel_logout_uri=receiver[1]),), redis_url=redis_url, resources=(RESOURCE,)
    ) as running:
        yield running


@pytest.fixture
async def oauth(idp: IdP, browser: Browser) -> AsyncIterator[OAuthClient]:
    c = OAuthClient(idp, browser)
    yield c
    await c.aclose()
