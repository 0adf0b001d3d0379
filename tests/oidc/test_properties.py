"""Property tests of token validation and the JWKS cache: invariants over generated claims and event sequences.

- Audiences (OpenID Connect Core 3.1.3.7 steps 3-5, Back-Channel Logout 2.6 step 3): a token is accepted exactly
  when ``aud`` names the client and nothing the client does not trust, and (ID tokens) ``azp`` is the client
  whenever it is present or needed.
- ``at_hash`` (Core 3.1.3.8): accepted exactly when absent or equal to the half hash of the access token,
  computed here from the spec.
- Key rotation: whatever tokens from outside do, a token from the token endpoint signed with a key the IdP
  publishes is always verified, and outside tokens cause at most one JWKS fetch per rate-limit interval.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import string
from typing import Any

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from bff.errors import InvalidIdToken, InvalidLogoutToken
from bff.oidc.id_token import BACKCHANNEL_LOGOUT_EVENT, validate_id_token, validate_logout_token
from bff.oidc.jwks import JwksCache, TokenSource
from tests.oidc.conftest import CLIENT_ID, ISSUER, T0
from tests.support.clock import FakeClock
from tests.support.oidc_provider import TestProvider

FAST = settings(max_examples=150, deadline=None)
OTHERS = ("api-a", "api-b", "other-client")
NONCE = "nonce-for-the-property-tests"

#: One ES256 provider for every example (signing with EC is cheap); tokens are minted per example.
PROVIDER = TestProvider(alg="ES256", issuer=ISSUER, client_id=CLIENT_ID, clock=lambda: T0)


def jwks_for(provider: TestProvider, clock: FakeClock) -> tuple[JwksCache, httpx.AsyncClient]:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=provider.app), base_url=ISSUER)
    return JwksCache(http, f"{ISSUER}/jwks", clock=clock), http


async def id_token_outcome(claims: dict[str, Any], trusted: tuple[str, ...], access_token: str | None) -> str | None:
    """None when the ID token is accepted, else the refusal message."""
    clock = FakeClock(T0)
    jwks, http = jwks_for(PROVIDER, clock)
    async with http:
        try:
            await validate_id_token(
                PROVIDER.sign(claims), jwks=jwks, issuer=ISSUER, client_id=CLIENT_ID, nonce=NONCE,
                access_token=access_token, algorithms=("ES256",), clock=clock, leeway=60,
                source=TokenSource.TOKEN_ENDPOINT, trusted_audiences=trusted,
            )  # fmt: skip
        except InvalidIdToken as exc:
            return exc.message
    return None


def base_claims() -> dict[str, Any]:
    return {"iss": ISSUER, "sub": "alice-0001", "iat": int(T0), "exp": int(T0) + 300, "nonce": NONCE}


audiences = st.lists(st.sampled_from((CLIENT_ID, *OTHERS)), min_size=1, max_size=4)
trusted_sets = st.lists(st.sampled_from(OTHERS), max_size=3, unique=True).map(tuple)


@FAST
@given(aud=audiences, as_string=st.booleans(), azp=st.sampled_from((None, CLIENT_ID, *OTHERS)), trusted=trusted_sets)
def test_an_id_token_is_accepted_exactly_when_its_audiences_are_trusted(
    aud: list[str], as_string: bool, azp: str | None, trusted: tuple[str, ...]
) -> None:
    claims = base_claims()
    claims["aud"] = aud[0] if as_string else aud
    if azp is not None:
        claims["azp"] = azp
    listed = [aud[0]] if as_string else aud
    expected = (
        CLIENT_ID in listed
        and all(a == CLIENT_ID or a in trusted for a in listed)
        and (azp is not None or len(listed) == 1)
        and azp in (None, CLIENT_ID)
    )
    outcome = asyncio.run(id_token_outcome(claims, trusted, None))
    assert (outcome is None) == expected, (claims, trusted, outcome)


@FAST
@given(aud=audiences, trusted=trusted_sets)
def test_a_logout_token_is_accepted_exactly_when_its_audiences_are_trusted(
    aud: list[str], trusted: tuple[str, ...]
) -> None:
    claims: dict[str, Any] = {
        "iss": ISSUER, "aud": aud, "iat": int(T0), "exp": int(T0) + 120, "jti": "j", "sub": "alice-0001",
        "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
    }  # fmt: skip
    expected = CLIENT_ID in aud and all(a == CLIENT_ID or a in trusted for a in aud)

    async def outcome() -> bool:
        clock = FakeClock(T0)
        jwks, http = jwks_for(PROVIDER, clock)
        async with http:
            try:
                await validate_logout_token(
                    PROVIDER.sign(claims, typ="logout+jwt"), jwks=jwks, issuer=ISSUER, client_id=CLIENT_ID,
                    algorithms=("ES256",), clock=clock, leeway=60, trusted_audiences=trusted,
                )  # fmt: skip
            except InvalidLogoutToken:
                return False
        return True

    assert asyncio.run(outcome()) == expected


def spec_half_hash(access_token: str) -> str:
    """ES256: SHA-256, left 128 bits, base64url without padding (Core 3.1.3.8)."""
    return base64.urlsafe_b64encode(hashlib.sha256(access_token.encode("ascii")).digest()[:16]).rstrip(b"=").decode()


vschar = st.text(alphabet=string.ascii_letters + string.digits + string.punctuation, min_size=1, max_size=200)


@FAST
@given(access_token=vschar, claimed=st.one_of(st.none(), st.just("<right>"), st.text(max_size=30)))
def test_at_hash_is_accepted_exactly_when_absent_or_right(access_token: str, claimed: str | None) -> None:
    claims = base_claims() | {"aud": CLIENT_ID}
    right = spec_half_hash(access_token)
    if claimed == "<right>":
        claimed = right
    if claimed is not None:
        claims["at_hash"] = claimed
    outcome = asyncio.run(id_token_outcome(claims, (), access_token))
    assert (outcome is None) == (claimed is None or claimed == right), (claimed, outcome)


# --- the JWKS cache under rotation and forged kids --------------------------------------------------------------

events = st.lists(
    st.one_of(
        st.tuples(st.just("forged"), st.integers(0, 3)),  # an outside token with a made-up kid (or a few)
        st.tuples(st.just("rotate"), st.booleans()),  # the IdP rotates, keeping the old key or not
        st.tuples(st.just("login"), st.just(0)),  # a token-endpoint token signed with the current key
        st.tuples(st.just("wait"), st.integers(1, 90)),  # seconds pass
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(script=events)
def test_logins_always_verify_and_forged_kids_stay_within_the_rate_limit(script: list[tuple[str, int]]) -> None:
    async def run() -> None:
        clock = FakeClock(T0)
        provider = TestProvider(alg="ES256", issuer=ISSUER, client_id=CLIENT_ID, clock=clock)
        jwks, http = jwks_for(provider, clock)
        async with http:
            await jwks.get_key(provider.signing_key.kid, "ES256", source=TokenSource.TOKEN_ENDPOINT)
            outside_fetches = 0
            for kind, n in script:
                if kind == "forged":
                    for i in range(n):
                        before = provider.jwks_requests
                        try:
                            await jwks.get_key(f"forged-{i}", "ES256", source=TokenSource.UNSOLICITED)
                        except InvalidIdToken:
                            pass
                        else:
                            raise AssertionError("a made-up kid was accepted")
                        outside_fetches += provider.jwks_requests - before
                elif kind == "rotate":
                    provider.rotate_key(keep_old=bool(n))
                elif kind == "login":
                    key = await jwks.get_key(provider.signing_key.kid, "ES256", source=TokenSource.TOKEN_ENDPOINT)
                    assert key.kid == provider.signing_key.kid
                else:
                    clock.advance(n)
            # One refetch at once, then one per 60 s; plus the max_age (3600 s) refetches a lookup may run.
            elapsed = clock.now - T0
            assert outside_fetches <= 1 + elapsed // 60 + elapsed // 3600, (outside_fetches, elapsed)

    asyncio.run(run())
