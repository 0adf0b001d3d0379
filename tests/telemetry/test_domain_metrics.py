"""The domain metrics counted exactly, per event, across real traffic: a browser, bff and the test OpenID Provider as
real servers on loopback, sessions in a real ``redis-server``.

Each test takes the metrics before the traffic it drives and asserts every series of a family that moved (not just
the one it expects): a joined refresh also counted ``ok``, or a logout counted twice, fails as surely as a missing
count. Metrics are process-wide, and the servers run in this process's threads, so the test reads them directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from uuid import uuid4

import httpx
import pytest

from bff.idp_http import create_idp_client
from bff.oidc.provider import IdentityProvider
from bff.session.manager import SessionManager
from bff.session.redis_store import RedisStore
from bff.sessions_admin import revoke_sessions
from tests.support.asgi import ok_answer
from tests.support.browser import Browser
from tests.support.clock import FakeClock
from tests.support.metric_deltas import MetricDeltas
from tests.support.oidc_provider import TestProvider
from tests.support.redis_server import RedisProcess
from tests.support.servers import serve
from tests.support.sessions import expire_access_token
from tests.support.stack import Stack, running_bff, running_stack

XHR = {"X-CSRF": "1"}
REFRESHES = "bff_token_refresh_total"
REFRESH_TIME = "bff_token_refresh_duration_seconds_count"
ENDED = "bff_sessions_ended_total"
CREATED = "bff_sessions_created_total"
LOGINS = "bff_login_total"
STORE_CALLS = "bff_store_operation_duration_seconds_count"
STORE_ERRORS = "bff_store_errors_total"
JWKS = "bff_jwks_fetch_total"
IDP_CALLS = "http_client_request_duration_seconds_count"


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with serve(ok_answer) as url:
        yield url


def with_api(upstream: str) -> Any:
    def customize(doc: dict[str, Any]) -> None:
        doc["routes"] = [{"path": "/api", "upstream": upstream, "token": "user"}]

    return customize


@pytest.fixture
def stack(redis_url: str, upstream: str) -> Iterator[Stack]:
    with running_stack(redis_url=redis_url, customize=with_api(upstream)) as stack:
        yield stack


@pytest.fixture
async def browser(stack: Stack) -> AsyncIterator[Browser]:
    """A browser logged in at ``stack``."""
    b = Browser()
    hops = await b.follow(f"{stack.url}/bff/login")
    assert hops[-2].headers["location"] == stack.url + "/"
    yield b
    await b.aclose()


@contextlib.contextmanager
def fake_clock_stack(redis_url: str, upstream: str) -> Iterator[tuple[Stack, FakeClock]]:
    """bff and the IdP on one clock the test moves (it starts now: the IdP's tokens are checked against it)."""
    clock = FakeClock(start=time.time())
    provider = TestProvider(clock=clock)
    with serve(provider.app) as idp_url:
        provider.issuer = idp_url
        with running_bff(provider, idp_url, redis_url=redis_url, clock=clock, customize=with_api(upstream)) as stack:
            yield stack, clock


@contextlib.asynccontextmanager
async def own_sessions(stack: Stack, redis_url: str) -> AsyncIterator[SessionManager]:
    """A SessionManager of the test's own on the stack's Redis and keys (the app's store lives on the app's loop)."""
    store = RedisStore.from_url(redis_url)
    try:
        prefix = stack.app.sessions.key_for("x").rpartition("s:")[0]
        yield SessionManager(store, stack.config.session, prefix=prefix)
    finally:
        await store.aclose()


async def expire(stack: Stack, browser: Browser, redis_url: str) -> None:
    async with own_sessions(stack, redis_url) as sessions:
        session_id = sessions.session_id_from_cookie(browser.cookies(stack.url)["__Host-bff"])
        assert session_id is not None
        await expire_access_token(sessions, session_id)


def idp_calls(deltas: MetricDeltas) -> dict[tuple[str, str, str], float]:
    """IdP calls since ``deltas`` by (bff_route, method, status); every one to the test IdP on 127.0.0.1."""
    calls: dict[tuple[str, str, str], float] = {}
    for labels, delta in deltas.changes(IDP_CALLS).items():
        named = dict(labels)
        if named["bff_route"].startswith("idp:"):
            assert named["server_address"] == "127.0.0.1", named
            key = (named["bff_route"], named["http_request_method"], named["http_response_status_code"])
            calls[key] = delta
    return calls


# --- logins ----------------------------------------------------------------------------------------------------------


async def test_a_login_counts_ok_one_session_its_store_calls_and_its_idp_calls(stack: Stack) -> None:
    deltas = MetricDeltas()
    browser = Browser()
    try:
        hops = await browser.follow(f"{stack.url}/bff/login")
    finally:
        await browser.aclose()
    assert hops[-2].headers["location"] == stack.url + "/"
    assert deltas.by(LOGINS, "outcome") == {"ok": 1}
    assert deltas.total(CREATED) == 1
    assert deltas.by(ENDED, "reason") == {}
    # The login state marker, the record, its two indexes (user, IdP session): nothing else touched the store.
    assert deltas.by(STORE_CALLS, "operation") == {"set_if_absent": 1, "set": 1, "index_add": 2}
    assert deltas.by(STORE_ERRORS, "operation") == {}
    # Discovery ran at startup; the first ID token fetched the keys.
    assert deltas.by(JWKS, "trigger") == {"startup": 1}
    assert idp_calls(deltas) == {("idp:token", "POST", "200"): 1, ("idp:jwks", "GET", "200"): 1}


async def test_a_callback_with_a_state_this_browser_never_started_is_invalid_state(stack: Stack) -> None:
    deltas = MetricDeltas()
    browser = Browser()
    try:
        response = await browser.request("GET", f"{stack.url}/bff/callback?state=forged-state&code=stolen-code")
    finally:
        await browser.aclose()
    assert response.status_code == 400
    assert deltas.by(LOGINS, "outcome") == {"invalid_state": 1}
    assert deltas.total(CREATED) == 0
    assert idp_calls(deltas) == {}  # the code was never spent


async def test_a_replayed_callback_is_invalid_state(stack: Stack) -> None:
    browser = Browser()
    try:
        start = await browser.request("GET", f"{stack.url}/bff/login")
        at_idp = await browser.request("GET", start.headers["location"])
        callback = at_idp.headers["location"]
        cookies = dict(browser.cookies(stack.url))
        assert (await browser.request("GET", callback)).status_code == 302
        browser.cookies(stack.url).update(cookies)  # the login cookie kept by whoever copied it
        deltas = MetricDeltas()
        replayed = await browser.request("GET", callback)
    finally:
        await browser.aclose()
    assert replayed.status_code == 400
    assert deltas.by(LOGINS, "outcome") == {"invalid_state": 1}
    assert deltas.total(CREATED) == 0


async def test_an_idp_error_answer_is_idp_error(stack: Stack) -> None:
    stack.provider.authorize_error = "access_denied"
    deltas = MetricDeltas()
    browser = Browser()
    try:
        hops = await browser.follow(f"{stack.url}/bff/login")
    finally:
        await browser.aclose()
    assert hops[-1].status_code == 400
    assert deltas.by(LOGINS, "outcome") == {"idp_error": 1}
    assert deltas.total(CREATED) == 0


async def test_a_refused_code_is_error(stack: Stack) -> None:
    stack.provider.token_error = "invalid_grant"
    deltas = MetricDeltas()
    browser = Browser()
    try:
        hops = await browser.follow(f"{stack.url}/bff/login")
    finally:
        await browser.aclose()
    assert hops[-1].status_code == 400
    assert deltas.by(LOGINS, "outcome") == {"error": 1}
    assert idp_calls(deltas) == {("idp:token", "POST", "400"): 1}


async def test_a_login_finished_after_login_timeout_is_expired(redis_url: str, upstream: str) -> None:
    with fake_clock_stack(redis_url, upstream) as (stack, clock):
        browser = Browser()
        try:
            start = await browser.request("GET", f"{stack.url}/bff/login")
            at_idp = await browser.request("GET", start.headers["location"])
            clock.advance(stack.config.session.login_timeout + 1)
            deltas = MetricDeltas()
            late = await browser.request("GET", at_idp.headers["location"])
        finally:
            await browser.aclose()
    assert late.status_code == 400
    assert deltas.by(LOGINS, "outcome") == {"expired": 1}
    assert deltas.total(CREATED) == 0


async def test_a_nonce_that_is_not_the_logins_is_invalid_state(stack: Stack) -> None:
    stack.provider.id_token_claims_override = {"nonce": "someone-elses-nonce"}
    deltas = MetricDeltas()
    browser = Browser()
    try:
        hops = await browser.follow(f"{stack.url}/bff/login")
    finally:
        await browser.aclose()
    assert hops[-1].status_code == 400
    assert deltas.by(LOGINS, "outcome") == {"invalid_state": 1}


# --- refreshes -------------------------------------------------------------------------------------------------------


async def test_a_refresh_is_ok_once(stack: Stack, browser: Browser, redis_url: str) -> None:
    await expire(stack, browser, redis_url)
    deltas = MetricDeltas()
    response = await browser.request("GET", f"{stack.url}/api/items", headers=XHR)
    assert response.status_code == 200
    assert deltas.by(REFRESHES, "outcome") == {"ok": 1}
    assert deltas.total(REFRESH_TIME) == 1
    assert ("idp:token", "POST", "200") in idp_calls(deltas)


async def test_concurrent_requests_make_one_refresh_and_the_others_join_it(
    stack: Stack, browser: Browser, redis_url: str
) -> None:
    requests = 5
    await expire(stack, browser, redis_url)
    gate = threading.Event()
    stack.provider.token_gate = gate  # the refresh waits at the IdP until every request has read the session
    deltas = MetricDeltas()
    sent = [
        asyncio.ensure_future(browser.request("GET", f"{stack.url}/api/items", headers=XHR)) for _ in range(requests)
    ]
    try:
        for _ in range(1000):
            if deltas.by(STORE_CALLS, "operation").get("get_and_touch") == requests:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail(f"the requests never reached bff: {deltas.by(STORE_CALLS, 'operation')}")
    finally:
        gate.set()
    responses = await asyncio.gather(*sent)
    assert [r.status_code for r in responses] == [200] * requests
    assert stack.provider.refresh_calls == 1
    assert deltas.by(REFRESHES, "outcome") == {"ok": 1, "joined": requests - 1}
    assert deltas.total(REFRESH_TIME) == requests


async def test_a_refresh_made_by_another_instance_is_joined(redis_url: str, upstream: str) -> None:
    provider = TestProvider()
    prefix = f"e2e{uuid4().hex}:"
    with contextlib.ExitStack() as servers:
        idp_url = provider.issuer = servers.enter_context(serve(provider.app))
        one, two = (
            servers.enter_context(
                running_bff(provider, idp_url, redis_url=redis_url, customize=with_api(upstream), store_prefix=prefix)
            )
            for _ in range(2)
        )
        browser = Browser()
        try:
            await browser.follow(f"{one.url}/bff/login")
            await expire(one, browser, redis_url)
            cookie = {"cookie": f"__Host-bff={browser.cookies(one.url)['__Host-bff']}", **XHR}
            gate = threading.Event()
            provider.token_gate = gate  # the first instance's refresh holds the lock until the second one waits
            deltas = MetricDeltas()
            first = asyncio.ensure_future(browser.http.get(f"{one.url}/api/items", headers=cookie))
            second = None
            try:
                for _ in range(1000):
                    if second is None and deltas.by(STORE_CALLS, "operation").get("lock") == 1:
                        second = asyncio.ensure_future(browser.http.get(f"{two.url}/api/items", headers=cookie))
                    if deltas.by(STORE_CALLS, "operation").get("lock") == 2:  # the second found the lock held
                        break
                    await asyncio.sleep(0.01)
                else:
                    pytest.fail(f"the instances never both tried the lock: {deltas.by(STORE_CALLS, 'operation')}")
            finally:
                gate.set()
            assert second is not None
            answers = [await first, await second]
        finally:
            await browser.aclose()
    assert [a.status_code for a in answers] == [200, 200]
    assert provider.refresh_calls == 1
    assert deltas.by(REFRESHES, "outcome") == {"ok": 1, "joined": 1}


async def test_a_refresh_answered_invalid_grant_ends_the_session_as_refresh_failed(
    stack: Stack, browser: Browser, redis_url: str
) -> None:
    await expire(stack, browser, redis_url)
    stack.provider.token_error = "invalid_grant"
    deltas = MetricDeltas()
    response = await browser.request("GET", f"{stack.url}/api/items", headers=XHR)
    assert response.status_code == 401
    assert deltas.by(REFRESHES, "outcome") == {"invalid_grant": 1}
    assert deltas.by(ENDED, "reason") == {"refresh_failed": 1}
    assert deltas.total(REFRESH_TIME) == 1


async def test_a_refreshed_id_token_for_another_user_is_sub_mismatch(
    stack: Stack, browser: Browser, redis_url: str
) -> None:
    await expire(stack, browser, redis_url)
    stack.provider.id_token_claims_override = {"sub": "mallory-0666"}
    deltas = MetricDeltas()
    response = await browser.request("GET", f"{stack.url}/api/items", headers=XHR)
    assert response.status_code == 401
    assert deltas.by(REFRESHES, "outcome") == {"sub_mismatch": 1}
    assert deltas.by(ENDED, "reason") == {"refresh_failed": 1}


async def test_an_idp_outage_is_idp_unavailable_and_ends_nothing(
    stack: Stack, browser: Browser, redis_url: str
) -> None:
    await expire(stack, browser, redis_url)
    stack.provider.fail_token_endpoint_with = 502
    deltas = MetricDeltas()
    response = await browser.request("GET", f"{stack.url}/api/items", headers=XHR)
    assert response.status_code == 503
    assert deltas.by(REFRESHES, "outcome") == {"idp_unavailable": 1}
    assert deltas.by(ENDED, "reason") == {}
    assert deltas.total(REFRESH_TIME) == 1
    # The refresh's own call; the probe that watches the IdP afterwards may have called it again.
    assert idp_calls(deltas)[("idp:token", "POST", "502")] >= 1


# --- sessions ending -------------------------------------------------------------------------------------------------


async def test_a_logout_ends_one_session_and_revokes_at_the_idp(stack: Stack, browser: Browser) -> None:
    deltas = MetricDeltas()
    response = await browser.request("POST", f"{stack.url}/bff/logout", headers=XHR)
    assert response.status_code == 200
    again = await browser.request("POST", f"{stack.url}/bff/logout", headers=XHR)  # nothing left to end
    assert again.status_code == 200
    assert deltas.by(ENDED, "reason") == {"logout": 1}
    assert idp_calls(deltas) == {("idp:revocation", "POST", "200"): 1}


async def test_a_new_login_replaces_the_browsers_session(stack: Stack, browser: Browser) -> None:
    deltas = MetricDeltas()
    await browser.follow(f"{stack.url}/bff/login")
    assert deltas.by(ENDED, "reason") == {"replaced": 1}
    assert deltas.total(CREATED) == 1


async def test_a_back_channel_logout_counts_each_session_it_ends(stack: Stack, browser: Browser) -> None:
    second = Browser()
    try:
        await second.follow(f"{stack.url}/bff/login")
        deltas = MetricDeltas()
        token = stack.provider.mint_logout_token()  # by sub: every session of alice
        async with httpx.AsyncClient() as idp:
            response = await idp.post(
                f"{stack.url}/bff/backchannel-logout",
                content=f"logout_token={token}".encode(),
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
        assert response.status_code == 200
        assert (await second.request("GET", f"{stack.url}/bff/user", headers=XHR)).status_code == 401
    finally:
        await second.aclose()
    assert deltas.by(ENDED, "reason") == {"backchannel": 2}


async def test_an_admin_revoke_counts_revoked(stack: Stack, browser: Browser, redis_url: str) -> None:
    http = create_idp_client()
    try:
        async with own_sessions(stack, redis_url) as sessions:
            deltas = MetricDeltas()
            report = await revoke_sessions(sessions, IdentityProvider(stack.config.oidc, http), "alice-0001")
    finally:
        await http.aclose()
    assert (report.deleted, report.revoked) == (1, 1)
    assert deltas.by(ENDED, "reason") == {"revoked": 1}
    assert (await browser.request("GET", f"{stack.url}/bff/user", headers=XHR)).status_code == 401


async def test_a_session_used_past_its_absolute_timeout_is_expired(redis_url: str, upstream: str) -> None:
    with fake_clock_stack(redis_url, upstream) as (stack, clock):
        browser = Browser()
        try:
            await browser.follow(f"{stack.url}/bff/login")
            # Redis keeps the record (its TTL runs on Redis's clock); bff notices the expiry when the record is read.
            clock.advance(stack.config.session.absolute_timeout + 1)
            deltas = MetricDeltas()
            response = await browser.request("GET", f"{stack.url}/bff/user", headers=XHR)
            again = await browser.request("GET", f"{stack.url}/bff/user", headers=XHR)
        finally:
            await browser.aclose()
    assert (response.status_code, again.status_code) == (401, 401)
    assert deltas.by(ENDED, "reason") == {"expired": 1}


# --- the store -------------------------------------------------------------------------------------------------------


async def test_a_store_outage_counts_the_failed_call(redis_process: RedisProcess, upstream: str) -> None:
    def short_timeout(doc: dict[str, Any]) -> None:
        with_api(upstream)(doc)
        doc["session"]["store_timeout"] = "300ms"

    with running_stack(redis_url=redis_process.url, customize=short_timeout) as stack:
        browser = Browser()
        try:
            await browser.follow(f"{stack.url}/bff/login")
            redis_process.stop()
            deltas = MetricDeltas()
            user = await browser.request("GET", f"{stack.url}/bff/user", headers=XHR)
            api = await browser.request("GET", f"{stack.url}/api/items", headers=XHR)
        finally:
            await browser.aclose()
    assert (user.status_code, api.status_code) == (503, 503)
    # One failed call each, whatever the connection retry inside it.
    assert deltas.by(STORE_ERRORS, "operation") == {"get_and_touch": 2}
    assert deltas.by(STORE_CALLS, "operation") == {"get_and_touch": 2}


# --- JWKS ------------------------------------------------------------------------------------------------------------


async def test_a_rotated_signing_key_refetches_the_jwks_once(stack: Stack, browser: Browser) -> None:
    stack.provider.rotate_key()
    deltas = MetricDeltas()
    second = Browser()
    try:
        await second.follow(f"{stack.url}/bff/login")
        await second.follow(f"{stack.url}/bff/login")  # the new key is cached now
    finally:
        await second.aclose()
    assert deltas.by(JWKS, "trigger") == {"unknown_kid": 1}
    assert idp_calls(deltas)[("idp:jwks", "GET", "200")] == 1


async def test_a_logout_token_signed_with_a_new_key_refetches_the_jwks_once(stack: Stack, browser: Browser) -> None:
    stack.provider.rotate_key()
    deltas = MetricDeltas()
    async with httpx.AsyncClient() as idp:
        response = await idp.post(
            f"{stack.url}/bff/backchannel-logout",
            content=f"logout_token={stack.provider.mint_logout_token()}".encode(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
    assert response.status_code == 200
    assert deltas.by(JWKS, "trigger") == {"unknown_kid": 1}
    assert deltas.by(ENDED, "reason") == {"backchannel": 1}


async def test_keys_older_than_their_max_age_are_fetched_again(redis_url: str, upstream: str) -> None:
    with fake_clock_stack(redis_url, upstream) as (stack, clock):
        browser = Browser()
        try:
            await browser.follow(f"{stack.url}/bff/login")
            clock.advance(3601)  # JwksCache's max_age
            deltas = MetricDeltas()
            await browser.follow(f"{stack.url}/bff/login")
        finally:
            await browser.aclose()
    assert deltas.by(JWKS, "trigger") == {"expired": 1}
