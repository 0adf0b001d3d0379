"""The suite-wide token leak guard can fail: its checker on crafted answers, and the whole wiring on a bff that is
made to leak (the guard's findings are taken by the test, so only what the test expects decides its outcome)."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bff.endpoints.logout import Logout
from tests.support.browser import Browser
from tests.support.leak_guard import MIN_SECRET, LeakGuard
from tests.support.stack import running_stack

ID_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLW9mLXRoZS1pZC10b2tlbg"
ACCESS = "at-" + "a" * 40
END_SESSION = "https://idp.example.com/logout"


def guard() -> LeakGuard:
    g = LeakGuard()
    g.learn_token_answer({"access_token": ACCESS, "id_token": ID_TOKEN, "refresh_token": "rt-" + "r" * 40})
    g.learn("client-secret-" + "s" * 20, "client secret")
    g.learn_metadata({"end_session_endpoint": END_SESSION})
    return g


def hint(base: str = END_SESSION, **params: str) -> bytes:
    return (base + "?" + urlencode({"id_token_hint": ID_TOKEN, **params})).encode()


def test_a_token_in_a_body_is_found_and_named_without_its_value() -> None:
    g = guard()
    found = g.check("POST /bff/logout", 200, [(b"content-type", b"application/json")], b'{"t": "' + ACCESS.encode())
    assert found == ["access token leaked in the body of the answer to POST /bff/logout (HTTP 200)"]
    assert ACCESS not in found[0]
    assert g.take_findings() == found


@pytest.mark.parametrize(
    ("status", "headers", "kind", "place"),
    [
        (200, [(b"x-debug", b"Bearer " + ACCESS.encode())], "access token", "x-debug header"),
        (302, [(b"location", hint(extra=ACCESS))], "access token", "location header"),
        (302, [(b"location", hint("https://evil.example/logout"))], "ID token", "location header"),
        (302, [(b"location", hint("https://idp.example.com/logout/other"))], "ID token", "location header"),
        (200, [(b"location", hint())], "ID token", "location header"),  # not a redirect: a script can read it
        (302, [(b"refresh", b"0; url=" + hint())], "ID token", "refresh header"),
        (302, [(b"location", hint(state=ID_TOKEN))], "ID token", "location header"),  # twice: once too many
        (302, [(b"location", hint() + b"#" + ID_TOKEN.encode())], "ID token", "location header"),
        (302, [(b"set-cookie", b"x=client-secret-" + b"s" * 20)], "client secret", "set-cookie header"),
        (200, [(b":status", b"200 " + ACCESS.encode())], "access token", ":status header"),
    ],
)
def test_tokens_in_headers_are_found_except_the_id_token_hint_of_a_logout_redirect(
    status: int, headers: list[tuple[bytes, bytes]], kind: str, place: str
) -> None:
    found = guard().check("GET /x", status, headers)
    assert found
    assert all(f.startswith(f"{kind} leaked in the {place}") for f in found)


def test_the_id_token_hint_of_a_redirect_to_the_end_session_endpoint_is_allowed() -> None:
    g = guard()
    assert g.check("GET /bff/logout", 302, [(b"location", hint(post_logout_redirect_uri="https://app/"))]) == []
    assert g.check("GET /bff/logout", 302, [(b"Location", hint(END_SESSION.upper()))]) == []


def test_a_token_split_across_body_chunks_is_found() -> None:
    g = guard()
    data = b"x" * 100 + ID_TOKEN.encode() + b"y" * 100
    tail = b""
    for i in range(0, len(data), 7):
        tail = g.check_chunk("GET /api/stream", 200, tail, data[i : i + 7])
    assert g.take_findings()  # (found more than once: each overlap may hold it again)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300), st.integers(min_value=1, max_value=64))
def test_a_token_anywhere_in_a_streamed_body_is_found(before: bytes, after: bytes, size: int) -> None:
    """Invariant: wherever a known token sits in a body, however the body is cut into chunks, the guard finds it."""
    g = guard()
    data = before + ACCESS.encode() + after
    tail = b""
    for i in range(0, len(data), size):
        tail = g.check_chunk("GET /api/stream", 200, tail, data[i : i + size])
    assert any(f.startswith("access token") for f in g.take_findings())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_bodies_without_a_known_secret_pass(body: bytes) -> None:
    g = guard()
    if not any(secret in body for secret in g.secrets):
        assert g.check("GET /", 200, [], body) == []


def test_short_values_are_not_tracked() -> None:
    g = LeakGuard()
    g.learn("x" * (MIN_SECRET - 1), "client secret")
    assert g.check("GET /", 200, [], b"x" * 100) == []


async def test_the_guard_catches_a_bff_that_leaks(
    leak_guard: LeakGuard, monkeypatch: pytest.MonkeyPatch, browser: Browser
) -> None:
    """End to end: tokens learnt from the real token endpoint, bff's answer scanned on its way out."""

    async def leaky_post(self: Logout, request: object) -> Response:
        return JSONResponse({"oops": self.config.oidc.client_secret.reveal() if self.config.oidc.client_secret else ""})

    with running_stack() as stack:
        await browser.follow(f"{stack.url}/bff/login")
        assert leak_guard.take_findings() == []  # the login itself leaked nothing
        monkeypatch.setattr(Logout, "_post", leaky_post)
        await browser.request("POST", f"{stack.url}/bff/logout", headers={"X-CSRF": "1"})
        found = leak_guard.take_findings()
        assert found == ["client secret leaked in the body of the answer to POST /bff/logout (HTTP 200)"]

        async def leak_id_token(self: Logout, request: object) -> Response:
            return JSONResponse({"redirect": "x?id_token_hint=" + str(stack.provider.token_responses[-1]["id_token"])})

        monkeypatch.setattr(Logout, "_post", leak_id_token)
        await browser.request("POST", f"{stack.url}/bff/logout", headers={"X-CSRF": "1"})
        assert leak_guard.take_findings() == [
            "ID token leaked in the body of the answer to POST /bff/logout (HTTP 200)"
        ]


def test_the_verdict_fails_the_test_that_leaked() -> None:
    from tests.support.leak_guard import verdict

    g = guard()
    g.check("GET /bff/user", 200, [], ACCESS.encode())
    with pytest.raises(pytest.fail.Exception) as failed:
        verdict(g)
    assert "access token leaked in the body of the answer to GET /bff/user" in str(failed.value)
    assert ACCESS not in str(failed.value)
    verdict(g)  # the findings were taken: a second verdict passes


async def test_a_code_bff_never_spent_is_known_before_bff_answers(
    leak_guard: LeakGuard, monkeypatch: pytest.MonkeyPatch, browser: Browser
) -> None:
    from bff.endpoints.callback import Callback

    async def echo_code(self: Callback, request: Request) -> Response:
        return Response(f"bad code {request.query_params['code']}", status_code=400)

    monkeypatch.setattr(Callback, "handle", echo_code)
    with running_stack() as stack:
        await browser.request("GET", f"{stack.url}/bff/callback?state=s&code={'c' * 43}")
    assert leak_guard.take_findings() == [
        "authorization code leaked in the body of the answer to GET /bff/callback (HTTP 400)"
    ]


def test_a_bff_serve_port_watched_in_one_test_is_forgotten_in_the_next() -> None:
    """Ports are reused: the port of an earlier test's ``bff serve`` may be a test IdP's in this one, whose token
    answers are no leak."""
    guard = LeakGuard()
    guard.watch_bff("http://127.0.0.1:41234")
    assert guard.bff_origins
    guard.reset()
    assert not guard.bff_origins
