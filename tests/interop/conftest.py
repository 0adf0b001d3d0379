"""Fixtures of the interoperability tests: the OpenID Provider a test runs against, ``op``: the reference IdP
(started per test, with the test's client) or panva's oidc-provider (started once per module)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.interop_op import OP, DevIdpOP
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


@pytest.fixture(params=["reference-idp", "oidc-provider"])
async def op(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OP]:
    if request.param == "oidc-provider":
        yield request.getfixturevalue("node_op")
        return
    devidp = DevIdpOP(tmp_path)
    yield devidp
    await devidp.aclose()
