"""JwksCache: keys from the JWKS URI only; an unknown kid refetches, single-flight for tokens from the token endpoint
and rate-limited by the injected clock for tokens from outside."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from joserfc.jwk import OctKey, RSAKey

from bff.errors import IdPUnavailable, InvalidIdToken
from bff.oidc.jwks import JwksCache, TokenSource
from tests.oidc.conftest import ISSUER
from tests.support.clock import FakeClock
from tests.support.oidc_provider import TestProvider

JWKS_URI = f"{ISSUER}/jwks"
OUTSIDE = TokenSource.UNSOLICITED
TOKEN_ENDPOINT = TokenSource.TOKEN_ENDPOINT


async def test_known_kid_is_served_from_cache(provider: TestProvider, jwks: JwksCache) -> None:
    kid = provider.signing_key.kid
    key = await jwks.get_key(kid, "RS256", source=OUTSIDE)
    assert key.kid == kid
    assert not key.is_private
    await jwks.get_key(kid, "RS256", source=OUTSIDE)
    assert provider.jwks_requests == 1


async def test_unknown_kid_refetches_once_then_fails(provider: TestProvider, jwks: JwksCache) -> None:
    await jwks.get_key(provider.signing_key.kid, "RS256", source=OUTSIDE)
    with pytest.raises(InvalidIdToken, match=r"^unknown signing key$"):
        await jwks.get_key("no-such-kid", "RS256", source=OUTSIDE)
    assert provider.jwks_requests == 2


async def test_refetch_is_rate_limited_by_the_clock(provider: TestProvider, jwks: JwksCache, clock: FakeClock) -> None:
    await jwks.get_key(provider.signing_key.kid, "RS256", source=OUTSIDE)
    with pytest.raises(InvalidIdToken):
        await jwks.get_key("unknown-1", "RS256", source=OUTSIDE)
    assert provider.jwks_requests == 2
    clock.advance(59)
    for kid in ("unknown-2", "unknown-3"):
        with pytest.raises(InvalidIdToken):
            await jwks.get_key(kid, "RS256", source=OUTSIDE)
    assert provider.jwks_requests == 2  # within min_refetch_interval: no request
    clock.advance(1)
    with pytest.raises(InvalidIdToken):
        await jwks.get_key("unknown-4", "RS256", source=OUTSIDE)
    assert provider.jwks_requests == 3


async def test_rotated_key_is_found_by_refetch(provider: TestProvider, jwks: JwksCache) -> None:
    await jwks.get_key(provider.signing_key.kid, "RS256", source=OUTSIDE)
    provider.rotate_key(keep_old=False)
    key = await jwks.get_key(provider.signing_key.kid, "RS256", source=OUTSIDE)
    assert key.kid == provider.signing_key.kid
    assert provider.jwks_requests == 2


async def test_concurrent_unknown_kids_share_one_refetch(provider: TestProvider, jwks: JwksCache) -> None:
    await jwks.get_key(provider.signing_key.kid, "RS256", source=OUTSIDE)
    provider.rotate_key()
    new_kid = provider.signing_key.kid
    async with asyncio.timeout(5):
        keys = await asyncio.gather(*(jwks.get_key(new_kid, "RS256", source=OUTSIDE) for _ in range(10)))
    assert {key.kid for key in keys} == {new_kid}
    assert provider.jwks_requests == 2


async def test_keys_are_refetched_after_max_age(provider: TestProvider, jwks: JwksCache, clock: FakeClock) -> None:
    old_kid = provider.signing_key.kid
    await jwks.get_key(old_kid, "RS256", source=OUTSIDE)
    provider.rotate_key(keep_old=False)  # the IdP withdraws the old key
    clock.advance(3600)
    with pytest.raises(InvalidIdToken):  # still cached without max_age
        await jwks.get_key(old_kid, "RS256", source=OUTSIDE)
    assert provider.jwks_requests == 3  # first fetch, the max_age refetch, one refetch for the now unknown kid


# --- who may make the cache refetch ------------------------------------------------------------------------------


async def test_forged_kids_from_outside_do_not_spend_the_token_endpoints_refetch(
    provider: TestProvider, jwks: JwksCache
) -> None:
    await jwks.get_key(provider.signing_key.kid, "RS256", source=OUTSIDE)
    for n in range(5):  # a public endpoint hit with made-up kids: one refetch, then the rate limit holds
        with pytest.raises(InvalidIdToken, match=r"^unknown signing key$"):
            await jwks.get_key(f"made-up-{n}", "RS256", source=OUTSIDE)
    assert provider.jwks_requests == 2
    for _ in range(3):  # the IdP rotates, again and again: each new kid from the token endpoint is fetched at once
        provider.rotate_key()
        key = await jwks.get_key(provider.signing_key.kid, "RS256", source=TOKEN_ENDPOINT)
        assert key.kid == provider.signing_key.kid
    assert provider.jwks_requests == 5
    with pytest.raises(InvalidIdToken):  # and the outside's budget is still spent
        await jwks.get_key("made-up-again", "RS256", source=OUTSIDE)
    assert provider.jwks_requests == 5


async def test_a_token_endpoint_kid_the_idp_does_not_publish_fails_after_its_own_refetch(
    provider: TestProvider, jwks: JwksCache
) -> None:
    await jwks.get_key(provider.signing_key.kid, "RS256", source=TOKEN_ENDPOINT)
    for n in range(3):
        with pytest.raises(InvalidIdToken, match=r"^unknown signing key$"):
            await jwks.get_key(f"unpublished-{n}", "RS256", source=TOKEN_ENDPOINT)
    assert provider.jwks_requests == 4  # one per token: it came over the back channel, each is worth a look


class GatedJwks:
    """A JWKS endpoint that holds every answer until the test opens the gate, counting requests."""

    def __init__(self, keys: list[RSAKey]) -> None:
        self.keys = keys
        self.requests = 0
        self.gate = asyncio.Event()
        #: Set when a request comes in (cleared by the test before it expects the next one).
        self.arrived = asyncio.Event()
        self.fail = False

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        self.arrived.set()
        published = {"keys": [key.as_dict(private=False) for key in self.keys]}  # the set when the request came
        await self.gate.wait()
        if self.fail:
            return httpx.Response(502)
        return httpx.Response(200, json=published)


@asynccontextmanager
async def primed_cache(idp: GatedJwks, kid: str, clock: FakeClock) -> AsyncIterator[JwksCache]:
    """A cache of ``idp``'s keys that has fetched them once to find ``kid``; the gate is shut again, and no request
    has arrived since."""
    async with httpx.AsyncClient(transport=httpx.MockTransport(idp.handler)) as http:
        jwks = JwksCache(http, JWKS_URI, clock=clock)
        idp.gate.set()
        await jwks.get_key(kid, "RS256", source=TOKEN_ENDPOINT)
        idp.gate.clear()
        idp.arrived.clear()
        yield jwks


async def test_concurrent_token_endpoint_refetches_are_single_flight(clock: FakeClock) -> None:
    old, new = (RSAKey.generate_key(2048, parameters={"kid": kid}) for kid in ("old", "new"))
    idp = GatedJwks([old])
    async with primed_cache(idp, "old", clock) as jwks:
        idp.keys = [old, new]
        async with asyncio.timeout(5):
            callers = [asyncio.create_task(jwks.get_key("new", "RS256", source=TOKEN_ENDPOINT)) for _ in range(20)]
            await idp.arrived.wait()  # the first caller's refetch is in flight, the rest wait
            await asyncio.sleep(0.01)
            idp.gate.set()
            keys = await asyncio.gather(*callers)
        assert {key.kid for key in keys} == {"new"}
        assert idp.requests == 2


async def test_a_failed_shared_refetch_fails_every_waiter_once(clock: FakeClock) -> None:
    old = RSAKey.generate_key(2048, parameters={"kid": "old"})
    idp = GatedJwks([old])
    async with primed_cache(idp, "old", clock) as jwks:
        idp.fail = True
        async with asyncio.timeout(5):
            callers = [asyncio.create_task(jwks.get_key("new", "RS256", source=TOKEN_ENDPOINT)) for _ in range(5)]
            await idp.arrived.wait()
            await asyncio.sleep(0.01)
            idp.gate.set()
            results = await asyncio.gather(*callers, return_exceptions=True)
        assert all(isinstance(r, IdPUnavailable) and "HTTP 502" in r.message for r in results), results
        assert idp.requests == 2  # the IdP is down: its waiters do not queue up a fetch each


async def test_a_fetch_that_started_before_the_miss_does_not_count(clock: FakeClock) -> None:
    """A token signed with a key published after a fetch began needs a fetch that began after the token came."""
    old, new = (RSAKey.generate_key(2048, parameters={"kid": kid}) for kid in ("old", "new"))
    idp = GatedJwks([old])
    async with primed_cache(idp, "old", clock) as jwks:
        async with asyncio.timeout(5):
            # A forged token from outside starts a refetch of the pre-rotation set...
            forged = asyncio.create_task(jwks.get_key("forged", "RS256", source=OUTSIDE))
            await idp.arrived.wait()
            # ...then the IdP rotates and a login brings a token signed with the new key.
            idp.keys = [old, new]
            login = asyncio.create_task(jwks.get_key("new", "RS256", source=TOKEN_ENDPOINT))
            await asyncio.sleep(0.01)
            idp.gate.set()
            with pytest.raises(InvalidIdToken):
                await forged
            assert (await login).kid == "new"
        assert idp.requests == 3


async def test_the_outside_rate_limit_still_holds_while_logins_refetch(
    provider: TestProvider, jwks: JwksCache, clock: FakeClock
) -> None:
    await jwks.get_key(provider.signing_key.kid, "RS256", source=OUTSIDE)
    with pytest.raises(InvalidIdToken):
        await jwks.get_key("forged-1", "RS256", source=OUTSIDE)
    provider.rotate_key()
    await jwks.get_key(provider.signing_key.kid, "RS256", source=TOKEN_ENDPOINT)
    assert provider.jwks_requests == 3
    clock.advance(59)
    with pytest.raises(InvalidIdToken):
        await jwks.get_key("forged-2", "RS256", source=OUTSIDE)
    assert provider.jwks_requests == 3  # a login's refetch does not renew the outside's budget either
    clock.advance(1)
    with pytest.raises(InvalidIdToken):
        await jwks.get_key("forged-3", "RS256", source=OUTSIDE)
    assert provider.jwks_requests == 4


# --- what a JWKS may hold ---------------------------------------------------------------------------------------


def jwks_client(answer: Any, *, status: int = 200, calls: list[int] | None = None) -> httpx.AsyncClient:
    """A client whose JWKS URI answers ``answer`` (JSON, or bytes as they are)."""

    def handler(request: httpx.Request) -> httpx.Response:
        if calls is not None:
            calls.append(1)
        if isinstance(answer, bytes):
            return httpx.Response(status, content=answer)
        return httpx.Response(status, json=answer)

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_symmetric_and_private_material_is_never_used(clock: FakeClock) -> None:
    rsa = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
    oct_key = OctKey.generate_key(256, parameters={"kid": "hmac-1"})
    answer = {
        "keys": [
            oct_key.as_dict(private=True),
            rsa.as_dict(private=True),  # an IdP leaking its private key: only the public part is kept
            {"kty": "RSA", "kid": "broken", "n": "AQAB"},  # missing e: skipped, not fatal
            {"kty": "PQC", "kid": "future"},
        ]
    }
    async with jwks_client(answer) as http:
        jwks = JwksCache(http, JWKS_URI, clock=clock)
        key = await jwks.get_key("rsa-1", "RS256", source=OUTSIDE)
        assert key.key_type == "RSA"
        assert not key.is_private
        for kid in ("hmac-1", "broken", "future"):
            with pytest.raises(InvalidIdToken, match=r"^unknown signing key$"):
                await jwks.get_key(kid, "RS256", source=OUTSIDE)


async def test_key_restricted_to_another_alg_or_use_does_not_fit(clock: FakeClock) -> None:
    rs384 = RSAKey.generate_key(2048, parameters={"kid": "rs384", "alg": "RS384"})
    enc = RSAKey.generate_key(2048, parameters={"kid": "enc", "use": "enc"})
    async with jwks_client({"keys": [rs384.as_dict(), enc.as_dict()]}) as http:
        jwks = JwksCache(http, JWKS_URI, clock=clock)
        assert (await jwks.get_key("rs384", "RS384", source=OUTSIDE)).kid == "rs384"
        for kid in ("rs384", "enc"):
            with pytest.raises(InvalidIdToken, match=r"^signing key does not match the token's alg$"):
                await jwks.get_key(kid, "RS256", source=OUTSIDE)


@pytest.mark.parametrize(
    ("answer", "status", "message"),
    [
        ({"keys": []}, 503, "answered HTTP 503"),
        (b"<html>oops</html>", 200, "not JSON"),
        ([1, 2], 200, "not a JSON object"),
        ({"keys": "none"}, 200, "has no 'keys' array"),
    ],
)
async def test_jwks_failures_are_idp_unavailable(clock: FakeClock, answer: Any, status: int, message: str) -> None:
    async with jwks_client(answer, status=status) as http:
        with pytest.raises(IdPUnavailable, match=message):
            await JwksCache(http, JWKS_URI, clock=clock).get_key("k", "RS256", source=OUTSIDE)


async def test_stale_keys_are_kept_when_the_idp_is_down(clock: FakeClock) -> None:
    rsa = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
    up = [True]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"keys": [rsa.as_dict()]}) if up[0] else httpx.Response(502)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        jwks = JwksCache(http, JWKS_URI, clock=clock)
        await jwks.get_key("rsa-1", "RS256", source=OUTSIDE)
        up[0] = False
        clock.advance(3600)
        assert (await jwks.get_key("rsa-1", "RS256", source=OUTSIDE)).kid == "rsa-1"


async def test_timeout_is_idp_unavailable_with_cause(clock: FakeClock) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(IdPUnavailable, match="timed out") as info:
            await JwksCache(http, JWKS_URI, clock=clock).get_key("k", "RS256", source=OUTSIDE)
    assert isinstance(info.value.__cause__, httpx.TimeoutException)
