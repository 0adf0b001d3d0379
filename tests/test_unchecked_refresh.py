"""A refreshed ID token whose check cannot finish because the IdP's keys do not answer, against a real Redis and the
real test OpenID Provider (rotating refresh tokens, revoking the whole family when one is presented again).

The IdP has spent the old refresh token; bff cannot tell yet whose the new tokens are (OpenID Connect Core 12.2), so
it serves none of them: the request gets 503. But it keeps them, sealed, under the spent token
(``SessionManager.save_unchecked_refresh_result``), so that the next refresh checks them again instead of presenting
the spent token (RFC 9700 4.14.2: the family revoked). Each case checks that invariant on what the IdP received.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bff.errors import IdPUnavailable, SubjectChanged
from bff.session.redis_store import RedisStore
from tests.support.metric_deltas import MetricDeltas
from tests.support.oidc_provider import TestProvider
from tests.support.token_env import TokenEnv, token_env
from tests.test_rotated_tokens import ROUTE, presented_refresh_tokens

pytestmark = pytest.mark.redis

REFRESHES = "bff_token_refresh_total"


@pytest.fixture
async def env(idp: TestProvider, redis_store: RedisStore) -> AsyncIterator[TokenEnv]:
    async with token_env(idp, redis_store) as env:
        yield env


async def _refresh_during_a_keys_outage(env: TokenEnv, *, refreshed_sub: str | None = None) -> tuple[str, str]:
    """A refresh whose new ID token names a key bff has not seen while the JWKS answers 503: (session id, spent).
    With ``refreshed_sub``, the refreshed ID token names that user."""
    manager = await env.manager()
    session_id, stale = await env.expired_login()
    if refreshed_sub is not None:
        env.provider.id_token_claims_override = {"sub": refreshed_sub}
    spent = stale.session.tokens.refresh_token
    assert spent is not None
    env.provider.rotate_key()  # the refreshed ID token names a kid bff's JWKS cache does not hold
    env.provider.fail_jwks_with = 503
    with pytest.raises(IdPUnavailable):
        await asyncio.wait_for(manager.access_token(stale, ROUTE), 5)
    assert presented_refresh_tokens(env.provider) == [spent], "the IdP answered the refresh"
    stored = await env.sessions.load(session_id)
    assert stored is not None, "the session lives on"
    assert stored.session.tokens.refresh_token == spent, "unchecked tokens are not the session's"
    assert await env.sessions.load_refresh_result(spent) is None, "nor a result another request would serve"
    return session_id, spent


@pytest.mark.parametrize("where", ["same process", "another process"])
async def test_tokens_whose_id_token_could_not_be_checked_are_checked_again_not_lost(env: TokenEnv, where: str) -> None:
    session_id, spent = await _refresh_during_a_keys_outage(env)
    # Still down: the next refresh checks the kept tokens again, fails the same way, and presents nothing.
    manager = env.managers[0] if where == "same process" else await env.manager()
    waiting = await env.sessions.load(session_id)
    assert waiting is not None
    with pytest.raises(IdPUnavailable):
        await asyncio.wait_for(manager.access_token(waiting, ROUTE), 5)
    assert presented_refresh_tokens(env.provider) == [spent]
    env.provider.fail_jwks_with = None  # the keys are back
    deltas = MetricDeltas()
    token = await asyncio.wait_for(manager.access_token(waiting, ROUTE), 5)
    issued = env.provider.token_responses[-1]
    assert token == issued["access_token"], "the kept tokens are served once checked"
    assert presented_refresh_tokens(env.provider) == [spent], "the spent token was never presented again"
    assert env.provider.reuse_detected == 0
    stored = await env.sessions.load(session_id)
    assert stored is not None
    assert stored.session.tokens.refresh_token == issued["refresh_token"]
    assert deltas.by(REFRESHES, "outcome") == {"joined": 1}
    # And the rotation goes on from the new refresh token.
    expired = await env.expire_access_token(session_id)
    assert await asyncio.wait_for(manager.access_token(expired, ROUTE), 5) != token
    assert presented_refresh_tokens(env.provider) == [spent, issued["refresh_token"]]
    assert env.provider.reuse_detected == 0


async def test_kept_tokens_for_another_user_end_the_session_once_checked(env: TokenEnv) -> None:
    session_id, spent = await _refresh_during_a_keys_outage(env, refreshed_sub="mallory-0666")
    env.provider.fail_jwks_with = None
    manager = await env.manager()
    waiting = await env.sessions.load(session_id)
    assert waiting is not None
    deltas = MetricDeltas()
    with pytest.raises(SubjectChanged) as refused:
        await asyncio.wait_for(manager.access_token(waiting, ROUTE), 5)
    assert refused.value.error == "session_expired", "the browser is told its session ended, nothing more"
    assert await env.sessions.load(session_id) is None, "the session ended, none of its tokens served"
    assert deltas.by(REFRESHES, "outcome") == {"sub_mismatch": 1}
    assert presented_refresh_tokens(env.provider) == [spent]
