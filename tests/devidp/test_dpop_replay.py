"""The DPoP proof memory (RFC 9449 11.1) of the reference IdP and the demo API: a proof's ``jti`` is refused a second
time for as long as the proof could be accepted, the memory stays bounded under a flood by refusing new proofs
(``invalid_dpop_proof``, the server is busy) rather than forgetting live ones, and expired entries make room.

The verifier itself with an injected clock first; then the IdP's ``/token`` and ``/par`` over loopback, which share
one memory sized by ``jti_cache_size``."""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from joserfc import jws
from joserfc.jwk import ECKey

from bff.oidc.dpop import DPoPProver
from bff.types import system_clock
from bff_devtools.dpop_proofs import InvalidProof, ProofVerifier
from tests.support.devidp import CLIENT_ID, CLIENT_SECRET, IdP, running_devidp

NOW = 1_700_000_000.0
WINDOW = 60.0
URL = "https://idp.example/token"
KEY = ECKey.generate_key("P-256", private=True)
BUSY = "the server is busy"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def proof(iat: float, jti: str | None = None) -> str:
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": KEY.as_dict(private=False)}
    claims = {"jti": jti or secrets.token_urlsafe(12), "htm": "POST", "htu": URL, "iat": iat}
    return jws.serialize_compact(header, json.dumps(claims), KEY, algorithms=["ES256"])


def outcome(verifier: ProofVerifier, one: str) -> str:
    """``accepted``, or the refusal's description."""
    try:
        verifier.verify(one, method="POST", url=URL)
    except InvalidProof as exc:
        return exc.description
    return "accepted"


@pytest.mark.parametrize("later", [1.0, WINDOW, 2 * WINDOW - 0.5, 2 * WINDOW - 0.001, 2 * WINDOW, 2 * WINDOW + 1])
def test_a_proof_is_refused_again_for_as_long_as_it_could_be_accepted(later: float) -> None:
    """The proof is used at the first moment it is accepted (``iat`` a whole window ahead), so it stays acceptable
    for two windows: a twin made with the same ``iat`` says whether it still is, and while it is, the original
    must be refused as a replay."""
    clock = Clock()
    verifier = ProofVerifier(clock=clock, window=WINDOW)
    iat = NOW + WINDOW
    original = proof(iat)
    assert outcome(verifier, original) == "accepted"
    clock.now = NOW + later
    twin = outcome(verifier, proof(iat))
    replay = outcome(verifier, original)
    if twin == "accepted":
        assert replay == "the DPoP proof's jti was used before"
    else:
        assert "iat is outside the accepted window" in twin
        assert replay == twin


def test_a_proof_is_usable_from_a_window_before_its_iat_until_a_window_after() -> None:
    clock = Clock()
    verifier = ProofVerifier(clock=clock, window=WINDOW)
    assert outcome(verifier, proof(NOW + WINDOW)) == "accepted"
    assert "outside the accepted window" in outcome(verifier, proof(NOW + WINDOW + 0.001))
    assert outcome(verifier, proof(NOW - WINDOW + 0.001)) == "accepted"
    assert "outside the accepted window" in outcome(verifier, proof(NOW - WINDOW)), "stale, like a JWT at its exp"


@pytest.mark.parametrize(
    "iat",
    [math.nan, math.inf, -math.inf, 10**400, True, "1700000000"],
    ids=["nan", "inf", "-inf", "beyond-float", "bool", "string"],
)
def test_an_iat_that_is_no_finite_number_is_refused(iat: object) -> None:
    """``json.loads`` reads NaN (which compares false to everything) and integers too large for a float."""
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": KEY.as_dict(private=False)}
    claims = {"jti": "j", "htm": "POST", "htu": URL, "iat": iat}
    unusual = jws.serialize_compact(header, json.dumps(claims), KEY, algorithms=["ES256"])
    verifier = ProofVerifier(clock=Clock(), window=WINDOW)
    assert "iat is outside the accepted window" in outcome(verifier, unusual)


def test_a_replay_is_refused_as_such_when_the_memory_is_full_of_other_live_proofs() -> None:
    clock = Clock()
    verifier = ProofVerifier(clock=clock, window=WINDOW, max_remembered=4)
    used = [proof(NOW) for _ in range(4)]
    assert [outcome(verifier, each) for each in used] == ["accepted"] * 4
    clock.now = NOW + WINDOW - 1
    assert BUSY in outcome(verifier, proof(clock.now)), "full of live proofs: a new one is refused"
    for each in used:
        assert outcome(verifier, each) == "the DPoP proof's jti was used before"


def test_a_flood_is_refused_while_the_memory_is_full_and_expired_entries_make_room() -> None:
    clock = Clock()
    verifier = ProofVerifier(clock=clock, window=WINDOW, max_remembered=10)
    refusals: list[str] = []
    accepted: list[float] = []
    for second in range(130):  # ten fresh proofs a second, each acceptable for WINDOW seconds after its iat
        clock.now = NOW + second
        for _ in range(10):
            result = outcome(verifier, proof(clock.now))
            if result == "accepted":
                accepted.append(clock.now)
            else:
                refusals.append(result)
    # Accepted: the first second's ten, then ten as soon as those expired (iat + WINDOW), and again.
    assert accepted == [NOW] * 10 + [NOW + WINDOW] * 10 + [NOW + 2 * WINDOW] * 10
    assert set(refusals) == {"the server is busy: too many DPoP proofs to remember; try again later"}


# --- the IdP over loopback --------------------------------------------------------------------------------------

CACHE_SIZE = 4


@pytest.fixture
def idp(tmp_path: Path) -> Iterator[IdP]:
    with running_devidp(tmp_path, jti_cache_size=CACHE_SIZE) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(auth=(CLIENT_ID, CLIENT_SECRET)) as client:
        yield client


def refused(answer: httpx.Response, description: str) -> None:
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_dpop_proof"
    assert description in answer.json()["error_description"]


async def test_the_idp_refuses_new_proofs_when_full_and_still_refuses_replays(
    idp: IdP, http: httpx.AsyncClient
) -> None:
    prover = DPoPProver(ECKey.generate_key("P-256", private=True), clock=system_clock)
    token_url, par_url = f"{idp.url}/token", f"{idp.url}/par"
    form = {"grant_type": "client_credentials"}
    used = [prover.proof("POST", token_url) for _ in range(CACHE_SIZE)]
    for each in used:
        answer = await http.post(token_url, data=form, headers={"DPoP": each})
        assert answer.status_code == 200, answer.text
    refused(await http.post(token_url, data=form, headers={"DPoP": prover.proof("POST", token_url)}), BUSY)
    # One memory for both endpoints that take proofs.
    refused(
        await http.post(par_url, data={"client_id": CLIENT_ID}, headers={"DPoP": prover.proof("POST", par_url)}), BUSY
    )
    refused(await http.post(token_url, data=form, headers={"DPoP": used[0]}), "jti was used before")


@pytest.mark.parametrize("endpoint", ["token", "par"])
async def test_proofs_sent_with_a_client_that_fails_to_authenticate_do_not_fill_the_memory(
    idp: IdP, endpoint: str
) -> None:
    """A flood of valid proofs from someone who cannot authenticate as a client holds no jti once refused: the
    memory keeps its room for clients that can (before, each held its jti for two windows: "busy" for everyone)."""
    prover = DPoPProver(ECKey.generate_key("P-256", private=True), clock=system_clock)
    url = f"{idp.url}/{endpoint}"
    form = {"grant_type": "client_credentials"} if endpoint == "token" else {"client_id": CLIENT_ID}
    async with httpx.AsyncClient(auth=(CLIENT_ID, "not-the-secret")) as stranger:
        for _ in range(2 * CACHE_SIZE):
            answer = await stranger.post(url, data=form, headers={"DPoP": prover.proof("POST", url)})
            assert answer.status_code == 401, answer.text
            assert answer.json()["error"] == "invalid_client"
    # The memory (one for both endpoints) has room for a client that authenticates; a proof that served is used up.
    token_url, token_form = f"{idp.url}/token", {"grant_type": "client_credentials"}
    async with httpx.AsyncClient(auth=(CLIENT_ID, CLIENT_SECRET)) as client:
        used = prover.proof("POST", token_url)
        answer = await client.post(token_url, data=token_form, headers={"DPoP": used})
        assert answer.status_code == 200, answer.text
        refused(await client.post(token_url, data=token_form, headers={"DPoP": used}), "jti was used before")
