"""Refresh-token rotation and reuse detection, back-channel logout, client credentials, revocation and the
blocklist, and a change of password, on the memory store and on a real Redis."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt

from bff.session.memory_store import MemoryStore
from bff.session.redis_store import RedisStore
from bff_devtools.devidp.minter import BACKCHANNEL_LOGOUT_EVENT
from tests.support.browser import Browser
from tests.support.clock import FakeClock
from tests.support.devidp import (
    CLIENT_ID,
    RESOURCE,
    IdP,
    LogoutReceiver,
    OAuthClient,
    client,
    running_devidp,
    unverified,
)
from tests.support.servers import free_port

#: Every test that exercises the store runs on both implementations.
both_stores = pytest.mark.parametrize("backend", ["memory", "redis"])


async def logout_tokens(receiver: LogoutReceiver, oauth: OAuthClient) -> list[dict[str, Any]]:
    """The logout tokens the client received, each validated as Back-Channel Logout 1.0 section 2.6 says."""
    jwks = await oauth.jwks()
    claims_list = []
    for token in receiver.tokens:
        decoded = jwt.decode(token, jwks, algorithms=["ES256"])
        assert decoded.header["typ"] == "logout+jwt"
        claims = dict(decoded.claims)
        assert claims["iss"] == oauth.idp.settings.issuer
        assert claims["aud"] == CLIENT_ID
        assert claims["events"] == {BACKCHANNEL_LOGOUT_EVENT: {}}
        assert claims["iat"] <= time.time() + 5 < claims["exp"] + 5
        assert claims["jti"]
        assert "nonce" not in claims
        claims_list.append(claims)
    return claims_list


@both_stores
async def test_refresh_rotates_the_refresh_token(oauth: OAuthClient) -> None:
    first = await oauth.login()
    response = await oauth.refresh(first["refresh_token"])
    assert response.status_code == 200, response.text
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    old_id, new_id = unverified(first["id_token"])[1], unverified(second["id_token"])[1]
    assert (new_id["sub"], new_id["sid"], new_id["auth_time"]) == (old_id["sub"], old_id["sid"], old_id["auth_time"])
    assert "nonce" not in new_id  # OpenID Connect Core 12.2
    third = await oauth.refresh(second["refresh_token"])
    assert third.status_code == 200


@both_stores
async def test_reuse_revokes_the_family_and_logs_the_session_out(
    oauth: OAuthClient, receiver: tuple[LogoutReceiver, str]
) -> None:
    first = await oauth.login()
    second = (await oauth.refresh(first["refresh_token"])).json()
    assert receiver[0].tokens == []

    reused = await oauth.refresh(first["refresh_token"])
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    # The whole family is dead, including the token that was current.
    assert (await oauth.refresh(second["refresh_token"])).json()["error"] == "invalid_grant"
    [logout] = await logout_tokens(receiver[0], oauth)
    id_claims = unverified(first["id_token"])[1]
    assert (logout["sid"], logout["sub"]) == (id_claims["sid"], "alice-0001")
    # Its live access tokens are blocklisted.
    blocklist = await oauth.blocklist()
    for tokens in (first, second):
        claims = unverified(tokens["access_token"])[1]
        assert blocklist[claims["jti"]] == claims["exp"]


@both_stores
async def test_another_family_is_unaffected_by_reuse(oauth: OAuthClient, browser: Browser) -> None:
    mine = await oauth.login()
    await oauth.refresh(mine["refresh_token"])
    other_browser = Browser()
    other = OAuthClient(oauth.idp, other_browser)
    try:
        theirs = await other.login("bob", "builder")
        await oauth.refresh(mine["refresh_token"])  # reuse in alice's family
        assert (await other.refresh(theirs["refresh_token"])).status_code == 200
    finally:
        await other.aclose()
        await other_browser.aclose()


@both_stores
async def test_a_refresh_token_of_another_client_is_refused(oauth: OAuthClient) -> None:
    tokens = await oauth.login()
    oauth.client_id, oauth.secret = "nobody", "nothing-0123456789abc"
    assert (await oauth.refresh(tokens["refresh_token"])).status_code == 401


@both_stores
async def test_client_credentials(oauth: OAuthClient) -> None:
    response = await oauth.token({"grant_type": "client_credentials", "scope": "orders:read"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert "refresh_token" not in body  # RFC 6749 4.4.3
    assert "id_token" not in body
    claims = await oauth.verify(body["access_token"], typ="at+jwt")
    assert claims["sub"] == CLIENT_ID
    assert claims["client_id"] == CLIENT_ID
    assert claims["scope"] == "orders:read"
    assert claims["aud"] == "demo-api"
    assert "role" not in claims


@both_stores
async def test_resource_indicators(oauth: OAuthClient) -> None:
    allowed = await oauth.token({"grant_type": "client_credentials", "resource": RESOURCE})
    assert unverified(allowed.json()["access_token"])[1]["aud"] == RESOURCE
    tokens = await oauth.login()
    refreshed = await oauth.refresh(tokens["refresh_token"], resource=RESOURCE)
    assert unverified(refreshed.json()["access_token"])[1]["aud"] == RESOURCE
    unknown = await oauth.token({"grant_type": "client_credentials", "resource": "https://elsewhere.example"})
    assert unknown.status_code == 400
    assert unknown.json()["error"] == "invalid_target"  # RFC 8707 2
    authorization = await oauth.authorize()
    refused = await oauth.exchange(authorization, resource="https://elsewhere.example")
    assert refused.json()["error"] == "invalid_target"
    assert (await oauth.exchange(authorization)).status_code == 200  # refused before the code was spent


@both_stores
async def test_revoking_a_refresh_token_revokes_its_family(
    oauth: OAuthClient, receiver: tuple[LogoutReceiver, str]
) -> None:
    first = await oauth.login()
    second = (await oauth.refresh(first["refresh_token"])).json()
    response = await oauth.revoke(second["refresh_token"], "refresh_token")
    assert response.status_code == 200
    assert (await oauth.refresh(second["refresh_token"])).json()["error"] == "invalid_grant"
    assert second["refresh_token"] not in response.text
    jti = unverified(second["access_token"])[1]["jti"]
    assert jti in await oauth.blocklist()
    assert receiver[0].tokens == []  # the client asked: no back-channel logout


@both_stores
async def test_revoking_an_access_token_blocklists_its_jti_until_it_expires(oauth: OAuthClient, idp: IdP) -> None:
    tokens = await oauth.login()
    assert await oauth.blocklist() == {}
    response = await oauth.revoke(tokens["access_token"], "access_token")
    assert response.status_code == 200
    claims = unverified(tokens["access_token"])[1]
    assert await oauth.blocklist() == {claims["jti"]: claims["exp"]}
    assert 890 < claims["exp"] - time.time() <= 900
    userinfo = await oauth.http.get(
        f"{idp.url}/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert userinfo.status_code == 401
    # The refresh token is untouched: revoking an access token ends only that token.
    assert (await oauth.refresh(tokens["refresh_token"])).status_code == 200


@both_stores
async def test_revoking_an_unknown_token_answers_200(oauth: OAuthClient) -> None:
    response = await oauth.revoke("not-a-token-we-issued")
    assert response.status_code == 200  # RFC 7009 2.2
    assert await oauth.blocklist() == {}


@pytest.fixture
async def alice_admin(oauth: OAuthClient) -> dict[str, str]:
    """alice signed in at the IdP in ``oauth``'s browser: her admin API session and CSRF token."""
    await oauth.login()
    session = await oauth.browser.request("GET", f"{oauth.idp.url}/admin/api/session")
    assert session.status_code == 200
    return {"X-CSRF-Token": session.json()["csrf_token"], "content-type": "application/json"}


@pytest.fixture
async def second_device(idp: IdP) -> AsyncIterator[OAuthClient]:
    browser = Browser()
    oauth = OAuthClient(idp, browser)
    yield oauth
    await oauth.aclose()
    await browser.aclose()


@both_stores
async def test_change_of_password_revokes_every_family_of_the_user(
    oauth: OAuthClient,
    second_device: OAuthClient,
    alice_admin: dict[str, str],
    receiver: tuple[LogoutReceiver, str],
) -> None:
    laptop = await oauth.login()  # a second grant in the admin's own browser
    phone = await second_device.login()
    bob_browser = Browser()
    bob = OAuthClient(oauth.idp, bob_browser)
    try:
        bobs = await bob.login("bob", "builder")
        changed = await oauth.browser.request(
            "POST",
            f"{oauth.idp.url}/admin/api/users/alice/password",
            headers=alice_admin,
            content=b'{"password": "through-the-looking-glass"}',
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["token_version"] == 1
        assert len(changed.json()["revoked_families"]) == 3
        for tokens in (laptop, phone):
            assert (await oauth.refresh(tokens["refresh_token"])).json()["error"] == "invalid_grant"
            assert unverified(tokens["access_token"])[1]["jti"] in await oauth.blocklist()
        assert (await bob.refresh(bobs["refresh_token"])).status_code == 200
        sids = {c["sid"] for c in await logout_tokens(receiver[0], oauth)}
        assert sids == {unverified(t["id_token"])[1]["sid"] for t in (laptop, phone)}
        # The phone's IdP session ended; the admin's own session was kept.
        assert (await second_device.authorize("alice", "wonderland")).redirect.status_code == 401
        assert (await second_device.authorize("alice", "through-the-looking-glass")).redirect.status_code == 302
        assert (await oauth.authorize()).form is None
    finally:
        await bob.aclose()
        await bob_browser.aclose()


async def test_expired_entries_leave_the_blocklist(tmp_path: Path, browser: Browser) -> None:
    clock = FakeClock(time.time())
    store = MemoryStore(clock=clock)
    with running_devidp(tmp_path, store=store, clock=clock) as idp:
        oauth = OAuthClient(idp, browser)
        try:
            token = (await oauth.login())["access_token"]
            await oauth.revoke(token)
            assert len(await oauth.blocklist()) == 1
            clock.advance(901)
            assert await oauth.blocklist() == {}
        finally:
            await oauth.aclose()
            await store.aclose()


@both_stores
async def test_the_blocklist_is_public(idp: IdP) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{idp.url}/blocklist")
    assert response.status_code == 200
    assert response.json() == {"revoked_jtis": {}}
    assert response.headers["cache-control"] == "no-store"


@both_stores
async def test_concurrent_use_of_one_refresh_token_lets_exactly_one_through(
    oauth: OAuthClient, receiver: tuple[LogoutReceiver, str]
) -> None:
    tokens = await oauth.login()
    answers = await asyncio.gather(*(oauth.refresh(tokens["refresh_token"]) for _ in range(5)))
    winners = [a.json() for a in answers if a.status_code == 200]
    assert len(winners) == 1
    assert all(a.json()["error"] == "invalid_grant" for a in answers if a.status_code != 200)
    # The others were reuse: the family is revoked, the winner's new token with it.
    assert (await oauth.refresh(winners[0]["refresh_token"])).json()["error"] == "invalid_grant"
    assert len(receiver[0].tokens) == 1


async def test_no_credential_reaches_the_log(oauth: OAuthClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = await oauth.login()
    rotated = (await oauth.refresh(tokens["refresh_token"])).json()
    await oauth.refresh(tokens["refresh_token"])  # reuse: logged as a warning
    assert "reuse detected" in caplog.text
    for secret in [*tokens.values(), *rotated.values(), oauth.secret]:
        if isinstance(secret, str) and len(secret) > 20:
            assert secret not in caplog.text


async def test_a_store_outage_is_503(tmp_path: Path) -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}", timeout=0.5)  # nothing listens there
    try:
        with running_devidp(tmp_path, store=store) as idp:
            async with httpx.AsyncClient() as http:
                response = await http.get(f"{idp.url}/blocklist")
    finally:
        await store.aclose()
    assert response.status_code == 503
    assert response.json() == {"error": "temporarily_unavailable"}
    assert response.headers["retry-after"] == "5"


@both_stores
async def test_a_reuse_grace_window_rotates_again_instead_of_revoking(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str, browser: Browser, receiver: tuple[LogoutReceiver, str]
) -> None:
    """Auth0's reuse interval, Okta's grace period: the refresh token the last rotation replaced may be presented
    once more within the window (a client that never got the answer to its refresh retries), and is rotated again;
    the family survives. Outside the window, or any older token, is reuse as ever."""
    clock = FakeClock(time.time())
    redis_url = request.getfixturevalue("redis_url") if backend == "redis" else None
    registration = client(backchannel_logout_uri=receiver[1])
    with running_devidp(tmp_path, (registration,), redis_url=redis_url, clock=clock, refresh_reuse_grace=30) as idp:
        oauth = OAuthClient(idp, browser)
        try:
            first = await oauth.login()
            second = (await oauth.refresh(first["refresh_token"])).json()  # its answer "lost" on the way
            clock.advance(29)
            retried = await oauth.refresh(first["refresh_token"])
            assert retried.status_code == 200, retried.text
            third = retried.json()
            assert len({first["refresh_token"], second["refresh_token"], third["refresh_token"]}) == 3
            assert receiver[0].tokens == []  # no logout: the family lives
            fourth = await oauth.refresh(third["refresh_token"])
            assert fourth.status_code == 200, fourth.text
            # The first token is two rotations old now: reuse, whatever the window.
            assert (await oauth.refresh(first["refresh_token"])).json()["error"] == "invalid_grant"
            assert (await oauth.refresh(fourth.json()["refresh_token"])).json()["error"] == "invalid_grant"
            assert len(receiver[0].tokens) == 1

            # Once the window has passed, presenting the replaced token again is reuse.
            other = await oauth.login()
            await oauth.refresh(other["refresh_token"])
            clock.advance(31)
            assert (await oauth.refresh(other["refresh_token"])).json()["error"] == "invalid_grant"
            assert len(receiver[0].tokens) == 2
        finally:
            await oauth.aclose()
