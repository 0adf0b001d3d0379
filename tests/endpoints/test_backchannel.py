"""``POST /bff/backchannel-logout`` against the real test OpenID Provider over HTTP (Back-Channel Logout 1.0):
the IdP ends bff sessions by ``sid`` or by ``sub``; forged, stale or replayed logout tokens end nothing."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from bff.session.manager import SessionManager
from bff.session.memory_store import MemoryStore
from tests.support.browser import Browser
from tests.support.clock import FakeClock
from tests.support.configs import make_config
from tests.support.oidc_provider import BACKCHANNEL_LOGOUT_EVENT, REMOVE, IdTokenMode
from tests.support.redis_server import RedisProcess
from tests.support.stack import Stack, running_stack

XHR = {"X-CSRF": "1"}
FORM = "application/x-www-form-urlencoded"
ENDPOINT = "/bff/backchannel-logout"


@pytest.fixture
def redis_stack(redis_url: str) -> Iterator[Stack]:
    with running_stack(redis_url=redis_url) as stack:
        yield stack


@pytest.fixture
async def idp_client() -> AsyncIterator[httpx.AsyncClient]:
    """The IdP's side of the back channel: no cookie, no CSRF header."""
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


async def log_in(browser: Browser, stack: Stack, user: str = "alice") -> str:
    """Log ``user`` in with ``browser``; returns the IdP session id (``sid``) of this login."""
    stack.provider.login_as = user
    try:
        hops = await browser.follow(f"{stack.url}/bff/login")
    finally:
        stack.provider.login_as = "alice"
    assert hops[-2].headers["location"] == stack.url + "/"
    assert "__Host-bff" in browser.cookies(stack.url)
    sid: str = claims_of(stack.provider.token_responses[-1]["id_token"])["sid"]
    return sid


async def status(browser: Browser, stack: Stack) -> int:
    return (await browser.request("GET", f"{stack.url}/bff/user", headers=XHR)).status_code


async def post_logout(
    client: httpx.AsyncClient, stack: Stack, token: str, *, content_type: str = FORM
) -> httpx.Response:
    return await client.post(
        stack.url + ENDPOINT, content=f"logout_token={token}".encode(), headers={"content-type": content_type}
    )


def assert_refused(response: httpx.Response, error: str = "invalid_logout_token") -> None:
    assert response.status_code == 400, response.text
    assert response.json()["error"] == error
    assert response.headers["cache-control"] == "no-store"


async def test_logout_by_sid_ends_only_that_idp_session(
    stack: Stack, browsers: Callable[[], Browser], idp_client: httpx.AsyncClient
) -> None:
    first, second, other_user = browsers(), browsers(), browsers()
    first_sid = await log_in(first, stack)
    second_sid = await log_in(second, stack)
    await log_in(other_user, stack, "bob")
    assert first_sid != second_sid

    token = stack.provider.mint_logout_token(user="alice", sid=first_sid)
    response = await post_logout(idp_client, stack, token, content_type=FORM + "; charset=utf-8")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert "set-cookie" not in response.headers

    assert await status(first, stack) == 401
    assert await status(second, stack) == 200  # the same user's other IdP session is untouched
    assert await status(other_user, stack) == 200


async def test_logout_by_sub_ends_every_session_of_the_user(
    stack: Stack, browsers: Callable[[], Browser], idp_client: httpx.AsyncClient
) -> None:
    first, second, other_user = browsers(), browsers(), browsers()
    await log_in(first, stack)
    await log_in(second, stack)
    await log_in(other_user, stack, "bob")

    token = stack.provider.mint_logout_token(user="alice")  # sub only
    assert "sid" not in claims_of(token)
    response = await post_logout(idp_client, stack, token)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"

    assert await status(first, stack) == 401
    assert await status(second, stack) == 401
    assert await status(other_user, stack) == 200


async def test_with_sid_and_sub_both_must_match(
    stack: Stack, browsers: Callable[[], Browser], idp_client: httpx.AsyncClient
) -> None:
    browser = browsers()
    sid = await log_in(browser, stack)
    # Alice's IdP session id, but bob's sub: not a session of bob's, so nothing ends.
    response = await post_logout(idp_client, stack, stack.provider.mint_logout_token(user="bob", sid=sid))
    assert response.status_code == 200
    assert await status(browser, stack) == 200

    response = await post_logout(idp_client, stack, stack.provider.mint_logout_token(user="alice", sid=sid))
    assert response.status_code == 200
    assert await status(browser, stack) == 401


async def test_a_replayed_logout_token_is_refused_and_ends_nothing(
    stack: Stack, browsers: Callable[[], Browser], idp_client: httpx.AsyncClient
) -> None:
    browser = browsers()
    await log_in(browser, stack)
    token = stack.provider.mint_logout_token(user="alice")  # sub only: if accepted again, it would end any new login
    assert (await post_logout(idp_client, stack, token)).status_code == 200
    assert await status(browser, stack) == 401

    await log_in(browser, stack)  # a new session of the same user, which the replay would end
    replay = await post_logout(idp_client, stack, token)
    assert_refused(replay)
    assert "replay" in replay.json()["message"]
    assert await status(browser, stack) == 200

    # A new logout token (new jti) still works: the refusal was about the jti, nothing else.
    assert (await post_logout(idp_client, stack, stack.provider.mint_logout_token(user="alice"))).status_code == 200
    assert await status(browser, stack) == 401


FORGED: dict[str, dict[str, Any]] = {
    "bad signature": {"mode": "bad_signature"},
    "alg none": {"mode": "alg_none"},
    "hs256 keyed with the public key": {"mode": "hs256_with_public_key"},
    "unknown kid": {"mode": "unknown_kid"},
    "key in the header": {"mode": "header_jwk"},
    "wrong aud": {"claims": {"aud": "another-client"}},
    # Back-Channel Logout 2.6 step 3 validates aud as for ID tokens: an extra untrusted audience is refused.
    "an untrusted extra aud": {"claims": {"aud": ["spa-bff", "another-client"], "azp": "spa-bff"}},
    "wrong iss": {"claims": {"iss": "https://evil.example"}},
    "with a nonce": {"claims": {"nonce": "n-0123456789"}},
    "no events": {"claims": {"events": REMOVE}},
    "another event": {"claims": {"events": {"http://schemas.openid.net/event/other": {}}}},
    "event not an object": {"claims": {"events": {BACKCHANNEL_LOGOUT_EVENT: "yes"}}},
    "expired": {"claims": {"iat": -1200, "exp": -600}},
    "too old without exp": {"claims": {"iat": -3600, "exp": REMOVE}},
    "iat in the future": {"claims": {"iat": +3600, "exp": +7200}},
    "no jti": {"claims": {"jti": REMOVE}},
    "typ of an access token": {"typ": "at+jwt"},
}


@pytest.mark.parametrize("case", FORGED.keys())
async def test_an_invalid_logout_token_ends_nothing(
    redis_stack: Stack, browsers: Callable[[], Browser], idp_client: httpx.AsyncClient, case: str
) -> None:
    stack = redis_stack
    browser = browsers()
    sid = await log_in(browser, stack)
    spec = FORGED[case]
    now = int(time.time())
    jti = f"jti-{case.replace(' ', '-')}-{now}"
    claims: dict[str, Any] = {"jti": jti}
    for name, value in spec.get("claims", {}).items():
        claims[name] = now + value if name in ("iat", "exp") and isinstance(value, int) else value
    mode: IdTokenMode = spec.get("mode", "good")
    token = stack.provider.mint_logout_token(
        user="alice", sid=sid, claims_override=claims, typ=spec.get("typ", "logout+jwt"), mode=mode
    )

    assert_refused(await post_logout(idp_client, stack, token))
    assert await status(browser, stack) == 200

    # The same logout, valid and with the same jti, does end the session: the refusal above was the token's fault,
    # and a refused token never burns the jti of a real one.
    good = stack.provider.mint_logout_token(user="alice", sid=sid, claims_override={"jti": jti})
    assert (await post_logout(idp_client, stack, good)).status_code == 200
    assert await status(browser, stack) == 401


@pytest.mark.parametrize(
    "token_kind", ["not a jwt", "id token", "neither sid nor sub", "encrypted", "empty signature part"]
)
async def test_malformed_or_misused_tokens_are_refused(
    redis_stack: Stack, browsers: Callable[[], Browser], idp_client: httpx.AsyncClient, token_kind: str
) -> None:
    stack = redis_stack
    browser = browsers()
    sid = await log_in(browser, stack)
    good = stack.provider.mint_logout_token(user="alice", sid=sid)
    token = {
        "not a jwt": "not-a-jwt",
        # An ID token of the same IdP session passed off as a logout token (nonce, no events).
        "id token": stack.provider.mint_id_token(user="alice", nonce="n-1", sid=sid),
        "neither sid nor sub": stack.provider.mint_logout_token(user="alice", claims_override={"sub": REMOVE}),
        "encrypted": "a.b.c.d.e",
        "empty signature part": good.rpartition(".")[0] + ".",
    }[token_kind]
    assert_refused(await post_logout(idp_client, stack, token))
    assert await status(browser, stack) == 200
    assert (await post_logout(idp_client, stack, good)).status_code == 200
    assert await status(browser, stack) == 401


async def test_requests_of_the_wrong_shape_are_refused(
    redis_stack: Stack, browsers: Callable[[], Browser], idp_client: httpx.AsyncClient
) -> None:
    stack = redis_stack
    browser = browsers()
    sid = await log_in(browser, stack)
    token = stack.provider.mint_logout_token(user="alice", sid=sid)
    url = stack.url + ENDPOINT

    as_json = await idp_client.post(url, json={"logout_token": token})
    assert_refused(as_json, "bad_request")
    as_text = await post_logout(idp_client, stack, token, content_type="text/plain")
    assert_refused(as_text, "bad_request")
    no_type = await idp_client.post(url, content=f"logout_token={token}".encode())
    assert_refused(no_type, "bad_request")
    missing = await idp_client.post(url, data={"token": token})
    assert_refused(missing, "bad_request")
    empty = await idp_client.post(url, data={"logout_token": ""})
    assert_refused(empty, "bad_request")
    twice = await idp_client.post(
        url, content=f"logout_token={token}&logout_token={token}".encode(), headers={"content-type": FORM}
    )
    assert_refused(twice, "bad_request")
    not_utf8 = await idp_client.post(url, content=b"logout_token=%ff%fe", headers={"content-type": FORM})
    assert_refused(not_utf8, "bad_request")
    huge = await idp_client.post(
        url, content=f"logout_token={token}&pad={'a' * 70_000}".encode(), headers={"content-type": FORM}
    )
    assert huge.status_code == 413
    assert huge.json()["error"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the cap holds while reading
        yield f"logout_token={token}&pad=".encode()
        for _ in range(20):
            yield b"a" * 4096

    streamed = await idp_client.post(url, content=chunks(), headers={"content-type": FORM})
    assert streamed.status_code == 413

    for method in ("GET", "PUT", "DELETE"):
        wrong_method = await idp_client.request(method, url)
        assert wrong_method.status_code == 405
        assert wrong_method.json()["error"] == "method_not_allowed"
    assert await status(browser, stack) == 200

    # None of the above consumed the token: the well-formed request with it ends the session.
    assert (await post_logout(idp_client, stack, token)).status_code == 200
    assert await status(browser, stack) == 401


def short_store_timeout(doc: dict[str, Any]) -> None:
    doc["session"]["store_timeout"] = "300ms"


async def test_a_stuck_store_answers_503_and_the_idps_retry_is_honoured(
    redis_process: RedisProcess, browsers: Callable[[], Browser], idp_client: httpx.AsyncClient
) -> None:
    with running_stack(redis_url=redis_process.url, customize=short_store_timeout) as stack:
        browser = browsers()
        sid = await log_in(browser, stack)
        token = stack.provider.mint_logout_token(user="alice", sid=sid)
        redis_process.pause()
        try:
            down = await post_logout(idp_client, stack, token)
        finally:
            redis_process.resume()
        assert down.status_code == 503
        assert down.json()["error"] == "temporarily_unavailable"
        assert int(down.headers["retry-after"]) > 0
        # Redis may or may not have run the queued claim once resumed; either way the retry is not a "replay".
        retry = await post_logout(idp_client, stack, token)
        assert retry.status_code == 200, retry.text
        assert await status(browser, stack) == 401
        assert_refused(await post_logout(idp_client, stack, token))  # once done, it is a replay


async def test_the_jti_is_remembered_as_long_as_the_token_is_acceptable(
    browsers: Callable[[], Browser], idp_client: httpx.AsyncClient
) -> None:
    clock = FakeClock(start=float(int(time.time())))
    with running_stack(clock=clock) as stack:
        stack.provider.clock = clock
        browser = browsers()
        await log_in(browser, stack)
        # No exp: acceptable until iat + max_age (300 s) + clock skew (60 s).
        token = stack.provider.mint_logout_token(user="alice", claims_override={"exp": REMOVE})
        assert (await post_logout(idp_client, stack, token)).status_code == 200
        await log_in(browser, stack)
        clock.advance(359)
        replay = await post_logout(idp_client, stack, token)
        assert_refused(replay)
        assert "replay" in replay.json()["message"]  # still remembered, not merely too old
        clock.advance(2)
        late = await post_logout(idp_client, stack, token)
        assert_refused(late)
        assert "too old" in late.json()["message"]
        assert await status(browser, stack) == 200


async def test_the_blocklist_entry_expires_with_the_token(fake_clock: FakeClock, memory_store: MemoryStore) -> None:
    sessions = SessionManager(memory_store, make_config().session, clock=fake_clock)
    until = fake_clock() + 100
    issuer = "https://idp.example.com"
    assert await sessions.logouts.begin_token(issuer, "j-1", until)
    assert await sessions.logouts.begin_token(issuer, "j-1", until)  # pending: a retry of an unfinished logout
    await sessions.logouts.finish_token(issuer, "j-1", until)
    assert not await sessions.logouts.begin_token(issuer, "j-1", until)  # done: a replay
    assert await sessions.logouts.begin_token("https://other-idp.example.com", "j-1", until)  # jti is per issuer
    fake_clock.advance(99)
    assert not await sessions.logouts.begin_token(issuer, "j-1", until)
    fake_clock.advance(2)
    assert await sessions.logouts.begin_token(issuer, "j-1", until + 100)  # expired with the token: forgotten
