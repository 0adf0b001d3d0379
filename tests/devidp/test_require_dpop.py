"""``require_dpop`` (``--require-dpop``): the reference IdP refuses a token request without a DPoP proof, as an IdP
does for a client registered with ``dpop_bound_access_tokens`` (RFC 9449 5.2), and takes it with one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from joserfc.jwk import ECKey

from bff.oidc.dpop import DPoPProver
from bff.types import system_clock
from tests.support.devidp import CLIENT_ID, CLIENT_SECRET, IdP, running_devidp

FORM = {"grant_type": "client_credentials"}


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdP]:
    with running_devidp(tmp_path_factory.mktemp("require-dpop"), require_dpop=True) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(auth=(CLIENT_ID, CLIENT_SECRET)) as client:
        yield client


async def test_a_token_request_without_a_proof_is_refused(idp: IdP, http: httpx.AsyncClient) -> None:
    answer = await http.post(f"{idp.url}/token", data=FORM)
    assert answer.status_code == 400, answer.text
    assert answer.json() == {"error": "invalid_dpop_proof", "error_description": "a DPoP proof is required"}


async def test_a_token_request_with_a_proof_is_taken_and_bound(idp: IdP, http: httpx.AsyncClient) -> None:
    prover = DPoPProver(ECKey.generate_key("P-256", private=True), clock=system_clock)
    url = f"{idp.url}/token"
    answer = await http.post(url, data=FORM, headers={"DPoP": prover.proof("POST", url)})
    assert answer.status_code == 200, answer.text
    assert answer.json()["token_type"] == "DPoP"
