"""Fixtures of the interoperability tests: the independent OpenID Provider, started once per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.node_oidc_provider import NodeOP, install_oidc_provider, running_oidc_provider


@pytest.fixture(scope="session")
def oidc_provider_installed() -> None:
    """``npm ci`` of the pinned oidc-provider, once per session (and not again while the lockfile is unchanged)."""
    install_oidc_provider()


@pytest.fixture(scope="module")
def node_op(oidc_provider_installed: None) -> Iterator[NodeOP]:
    """panva's oidc-provider on a free loopback port; clients register themselves (RFC 7591)."""
    with running_oidc_provider() as op:
        yield op
