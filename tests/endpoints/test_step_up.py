"""Step-up logins (RFC 9470) at ``/bff/login`` and ``/bff/callback`` against the test OpenID Provider: what is sent
to the IdP, and every way the answer can fall short, each of which keeps the session the user already had."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from bff.endpoints.step_up import check_step_up
from bff.errors import StepUpFailed
from bff.models import LoginState
from tests.support.browser import Browser
from tests.support.oidc_provider import REMOVE
from tests.support.stack import Stack, running_stack

XHR = {"X-CSRF": "1"}
MFA = "urn:example:mfa"


def _step_up_config(doc: dict[str, Any]) -> None:
    doc["oidc"]["user_claims"] = ["sub", "name", "acr", "auth_time"]
    doc["oidc"]["acr_values_allowed"] = [MFA, "urn:example:pwd"]


@pytest.fixture(scope="module")
def shared_stack() -> Iterator[Stack]:
    with running_stack(customize=_step_up_config) as stack:
        yield stack


@pytest.fixture
def stack(shared_stack: Stack) -> Stack:
    provider = shared_stack.provider
    provider.id_token_claims_override = {}
    provider.login_as = "alice"
    provider.authorize_requests.clear()
    return shared_stack


async def logged_in(stack: Stack) -> tuple[Browser, str]:
    """A browser with a plain session, and its session cookie."""
    browser = Browser()
    hops = await browser.follow(f"{stack.url}/bff/login")
    assert hops[-1].status_code in (200, 404), hops[-1].text  # back on the SPA's origin (no SPA here)
    return browser, browser.cookies(stack.url)["__Host-bff"]


async def user(browser: Browser, stack: Stack) -> dict[str, Any]:
    response = await browser.get(f"{stack.url}/bff/user", headers=XHR)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def step_up(browser: Browser, stack: Stack, query: str) -> list[Any]:
    return await browser.follow(f"{stack.url}/bff/login?{query}&returnTo=/admin")


async def test_step_up_sends_the_parameters_and_replaces_the_session(stack: Stack) -> None:
    browser, old_cookie = await logged_in(stack)
    stack.provider.id_token_claims_override = {"acr": MFA}
    hops = await step_up(browser, stack, f"acr_values={MFA}&max_age=0")
    authorize = stack.provider.authorize_requests[-1]
    assert (authorize["acr_values"], authorize["max_age"], authorize["prompt"]) == (MFA, "0", "login")
    assert hops[-2].headers["location"] == stack.url + "/admin"
    new_cookie = browser.cookies(stack.url)["__Host-bff"]
    assert new_cookie != old_cookie  # a fresh session id (no fixation)
    me = await user(browser, stack)
    assert me["acr"] == MFA
    assert isinstance(me["auth_time"], int)
    browser.cookies(stack.url)["__Host-bff"] = old_cookie
    gone = await browser.get(f"{stack.url}/bff/user", headers=XHR)
    assert gone.status_code == 401  # the old session was replaced
    await browser.aclose()


async def test_a_plain_login_sends_no_step_up_parameters(stack: Stack) -> None:
    browser, _ = await logged_in(stack)
    assert not {"acr_values", "max_age", "prompt"} & set(stack.provider.authorize_requests[-1])
    await browser.aclose()


@pytest.mark.parametrize(
    ("override", "login_as", "query"),
    [
        ({"acr": "urn:example:pwd"}, "alice", f"acr_values={MFA}"),  # another acr than asked for
        ({"acr": REMOVE}, "alice", f"acr_values={MFA}"),  # no acr at all
        ({"acr": MFA, "auth_time": REMOVE}, "alice", "max_age=60"),  # Core 3.1.3.7 step 13
        ({"auth_time": "yesterday"}, "alice", "max_age=60"),
        ({"auth_time": True}, "alice", "max_age=60"),
        ({"auth_time": int(time.time()) - 3600}, "alice", "max_age=60"),  # older than max_age + clock_skew
        ({"auth_time": int(time.time()) + 3600}, "alice", "max_age=60"),  # in the future
        ({"acr": MFA}, "bob", f"acr_values={MFA}"),  # another user
    ],
)
async def test_a_failed_step_up_keeps_the_old_session(
    stack: Stack, override: dict[str, Any], login_as: str, query: str
) -> None:
    browser, old_cookie = await logged_in(stack)
    stack.provider.id_token_claims_override = override
    stack.provider.login_as = login_as
    hops = await step_up(browser, stack, query)
    assert hops[-1].status_code == 400
    assert "error: step_up_failed" in hops[-1].text
    assert browser.cookies(stack.url)["__Host-bff"] == old_cookie
    me = await user(browser, stack)
    assert me["sub"] == "alice-0001"
    assert "acr" not in me
    await browser.aclose()


@pytest.mark.parametrize(
    "query",
    [
        "acr_values=urn:example:gold",  # not in acr_values_allowed
        "acr_values=a%20%20b",
        "acr_values=%3Cscript%3E",
        "acr_values=",
        "max_age=-1",
        "max_age=1.5",
        "max_age=99999999999",
        f"acr_values={MFA}&acr_values=urn:example:pwd",
        "max_age=1&max_age=2",
    ],
)
async def test_a_malformed_or_unlisted_step_up_is_refused_before_the_idp(stack: Stack, query: str) -> None:
    browser = Browser()
    response = await browser.get(f"{stack.url}/bff/login?{query}")
    assert response.status_code == 400
    assert "error: bad_request" in response.text
    assert stack.provider.authorize_requests == []
    assert not any(name.startswith("__Host-bff") for name in browser.cookies(stack.url))
    await browser.aclose()


def _login(**changes: Any) -> LoginState:
    return LoginState(state="s", nonce="n", code_verifier="v", return_to="/", created_at=0.0, **changes)


def test_check_step_up_bounds() -> None:
    claims = {"sub": "u", "acr": "a", "auth_time": 1000}
    check_step_up(_login(), {}, previous_sub="other", now=0, leeway=0)  # a plain login checks nothing
    check_step_up(_login(acr_values=("a",), max_age=10), claims, previous_sub="u", now=1010, leeway=0)
    check_step_up(_login(max_age=10), claims, previous_sub=None, now=1015, leeway=5)
    with pytest.raises(StepUpFailed):
        check_step_up(_login(max_age=10), claims, previous_sub=None, now=1015.5, leeway=5)
    with pytest.raises(StepUpFailed):
        check_step_up(_login(max_age=10), claims, previous_sub=None, now=994, leeway=5)


def test_login_state_round_trips_and_reads_older_cookies() -> None:
    login = _login(acr_values=("a", "b"), max_age=0)
    assert LoginState.from_json(login.to_json()) == login
    plain = _login()
    assert set(plain.to_json()) == {"state", "nonce", "code_verifier", "return_to", "created_at"}
    assert LoginState.from_json(plain.to_json()) == plain
