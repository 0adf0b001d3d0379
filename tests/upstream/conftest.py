"""The data-plane client's tests run on both event loops: asyncio's, and uvloop, which ``bff serve`` runs on and whose
transports are not asyncio's classes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping

import pytest
import uvloop

from bff.upstream import UpstreamClient

CLIENT_LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return CLIENT_LOOPS


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    """A data-plane client, closed after the test."""
    upstream_client = UpstreamClient()
    yield upstream_client
    await upstream_client.aclose()
