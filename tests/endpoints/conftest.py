"""Fixtures of the endpoint tests: bff and the test OpenID Provider as real servers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.stack import Stack, running_stack


@pytest.fixture(params=["redis", "memory"])
def stack(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Stack]:
    """bff and the test IdP, once with the Redis store and once with the memory store."""
    with running_stack(redis_url=redis_url if request.param == "redis" else None) as stack:
        yield stack
