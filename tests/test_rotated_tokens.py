"""Rotated tokens on the paths beside the login's own refresh, against a real Redis and the real test OpenID Provider
(rotating refresh tokens, revoking the whole family when one is presented again):

* a token exchange (RFC 8693) that fails after the login's token was refreshed for it, under the same lock: the
  rotated login tokens are stored anyway (and the spending mark cleared), the request gets the exchange's error;
* a route's own token (RFC 8707) refreshed while the session still holds a refresh token whose result another
  refresh stored but whose session write was lost: the route adopts that result instead of presenting the spent
  token again (503 while its mark lives, reuse once it expired).

Each case checks the invariant directly, on what the IdP received: no refresh token was presented twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Literal

import pytest

from bff.config import ExchangeSettings, RouteSettings
from bff.errors import BffError, IdPUnavailable, TokenExchangeRefused
from bff.session.redis_store import RedisStore
from bff.tokens.route_tokens import route_token_key
from tests.support.metric_deltas import MetricDeltas
from tests.support.oidc_provider import TestProvider
from tests.support.token_env import TokenEnv, token_env

pytestmark = pytest.mark.redis

ROUTE = RouteSettings(path="/api", upstream="https://api.example.net")
#: The test provider lets the client exchange for "orders-api" only: "ledger-api" is refused (invalid_target).
ORDERS = RouteSettings(path="/orders", upstream="https://orders.example.net", exchange=ExchangeSettings("orders-api"))
LEDGER = RouteSettings(path="/ledger", upstream="https://ledger.example.net", exchange=ExchangeSettings("ledger-api"))
#: A route with a token of its own from the refresh grant (RFC 8707 ``resource``).
BILLING = RouteSettings(
    path="/billing", upstream="https://billing.example.net", resource="https://billing.example.net", scopes=("openid",)
)
EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"


@pytest.fixture
async def env(idp: TestProvider, redis_store: RedisStore) -> AsyncIterator[TokenEnv]:
    async with token_env(idp, redis_store) as env:
        yield env


def presented_refresh_tokens(provider: TestProvider) -> list[str]:
    """Every refresh token the IdP received, in order."""
    return [r["refresh_token"] for r in provider.token_requests if r.get("grant_type") == "refresh_token"]


def grants_since(provider: TestProvider, start: int) -> list[str]:
    return [r.get("grant_type", "") for r in provider.token_requests[start:]]


@pytest.mark.parametrize(
    ("failure", "route", "error", "outcome"),
    [
        ("refused", LEDGER, TokenExchangeRefused, "refused"),
        ("failing", ORDERS, IdPUnavailable, "idp_unavailable"),
    ],
)
async def test_a_failed_exchange_keeps_the_login_tokens_refreshed_for_it(
    env: TokenEnv,
    failure: Literal["refused", "failing"],
    route: RouteSettings,
    error: type[BffError],
    outcome: str,
) -> None:
    """The login's token expired, so the exchange flight refreshes it first (the IdP rotates the refresh token),
    then the exchange is refused (502) or the IdP fails it (503). The rotated tokens are stored all the same: losing
    them would leave the spent refresh token in the session, blocked by its mark until it expires, then presented
    again, and the IdP would revoke the family."""
    manager = await env.manager()
    session_id, stale = await env.expired_login()
    spent = stale.session.tokens.refresh_token
    assert spent is not None
    if failure == "failing":
        env.provider.fail_exchanges_with = 503
    start = len(env.provider.token_requests)
    deltas = MetricDeltas()
    with pytest.raises(error):
        await asyncio.wait_for(manager.access_token(stale, route), 5)
    assert grants_since(env.provider, start) == ["refresh_token", EXCHANGE_GRANT]
    assert deltas.by("bff_token_exchange_total", "outcome") == {outcome: 1}
    stored = await env.sessions.load(session_id)
    assert stored is not None, "the session lives on"
    assert stored.session.tokens.refresh_token not in (None, spent), "the rotated refresh token was stored"
    assert stored.session.tokens.access_token != stale.session.tokens.access_token
    assert stored.session.route_tokens == {}, "no exchanged token"
    assert await env.sessions.store.get(env.sessions.spending_key(spent)) is None, "the mark was cleared"
    # The session goes on with the stored tokens: a plain route sends the refreshed token without a refresh, and the
    # next refresh (in another process: this one's IdP probe saw the failing exchange) presents the new token.
    assert await manager.access_token(stale, ROUTE) == stored.session.tokens.access_token
    assert env.provider.refresh_calls == 1
    other = await env.manager()
    expired = await env.expire_access_token(session_id)
    assert await asyncio.wait_for(other.access_token(expired, ROUTE), 5) != expired.session.tokens.access_token
    presented = presented_refresh_tokens(env.provider)
    assert presented == [spent, stored.session.tokens.refresh_token]
    assert env.provider.reuse_detected == 0


@pytest.mark.parametrize("mark", ["held", "expired"])
async def test_a_route_refresh_adopts_a_stored_result_whose_session_write_was_lost(
    env: TokenEnv, mark: Literal["held", "expired"]
) -> None:
    """A login refresh stored its result, then lost its session write (a failover): the session holds the spent
    refresh token again. A route with a token of its own takes the stored result (the login's new tokens) and
    refreshes its token from the new refresh token, whether the spent token's mark is still held or has expired:
    instead of answering 503 while the mark lives, then presenting the spent token (reuse: the family revoked)."""
    here, there = await env.manager(), await env.manager()
    session_id, stale = await env.expired_login()
    spent = stale.session.tokens.refresh_token
    assert spent is not None
    refreshed = await asyncio.wait_for(here.access_token(stale, ROUTE), 5)
    result = await env.sessions.load_refresh_result(spent)
    assert result is not None
    assert result.access_token == refreshed
    await env.sessions.store.set(stale.key, stale.raw, 300)  # the session write lost, the result kept
    if mark == "held":  # its holder gave up before it could store the session, and never cleared its mark
        await env.sessions.store.set(env.sessions.spending_key(spent), b"a-holder-that-gave-up", 60)
    lost = await env.sessions.load(session_id)
    assert lost is not None
    assert lost.session.tokens.refresh_token == spent
    token = await asyncio.wait_for(there.access_token(lost, BILLING), 5)
    assert env.provider.token_requests[-1].get("resource") == BILLING.resource
    assert presented_refresh_tokens(env.provider) == [spent, result.refresh_token]
    assert env.provider.reuse_detected == 0
    stored = await env.sessions.load(session_id)
    assert stored is not None
    assert stored.session.tokens.access_token == refreshed, "the login's tokens are the stored result's"
    assert stored.session.tokens.refresh_token not in (spent, result.refresh_token)
    key = route_token_key(BILLING)
    assert key is not None
    assert stored.session.route_tokens[key].access_token == token
    # The login's own route finds the adopted tokens: nothing more is refreshed.
    assert await asyncio.wait_for(here.access_token(stale, ROUTE), 5) == refreshed
    assert env.provider.refresh_calls == 2
