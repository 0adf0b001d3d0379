"""Fixtures for the OIDC tests: a TestProvider on a fake clock, reached in-process through httpx's ASGI transport.

Tests of the client over real HTTP start their own provider with ``serve()`` (see ``test_client.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from bff.oidc.jwks import JwksCache
from tests.support.clock import FakeClock
from tests.support.oidc_provider import TestProvider

T0 = 1_700_000_000.0
ISSUER = "https://idp.test"
CLIENT_ID = "spa-bff"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def provider(clock: FakeClock) -> TestProvider:
    """An RS256 provider whose tokens are minted on ``clock``."""
    return TestProvider(issuer=ISSUER, client_id=CLIENT_ID, clock=clock)


@pytest.fixture
async def idp_http(provider: TestProvider) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client whose requests ``provider`` answers in-process."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=provider.app), base_url=ISSUER) as client:
        yield client


@pytest.fixture
def jwks(idp_http: httpx.AsyncClient, clock: FakeClock) -> JwksCache:
    return JwksCache(idp_http, f"{ISSUER}/jwks", clock=clock)
