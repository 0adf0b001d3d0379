"""Reactive refresh: an upstream's 401 to a token bff sent leads to one refresh and one replay, never a loop."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest

from bff.errors import SessionExpired
from bff.proxy.challenges import is_invalid_token_challenge
from tests.proxy.conftest import TOKEN, StubBearer, Upstream
from tests.support.echo_upstream import FRESH_TOKEN

SMALL = bytes(range(256)) * 16 + b"\x00\xff"  # 4 KiB, under the 64 KiB replay limit
BIG = b"B" * (100 * 1024)  # over it


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def authorizations(upstream: Upstream) -> list[str | None]:
    return [seen.authorization for seen in upstream.state.seen]


def test_get_is_replayed_once_with_the_fresh_token(
    client: httpx.Client, upstream: Upstream, bearer: StubBearer
) -> None:
    response = client.get("/api/up/protected", params={"q": "1"})
    assert response.status_code == 200
    assert response.json()["query_string"] == "q=1"
    assert bearer.refreshed == [TOKEN]
    assert authorizations(upstream) == [f"Bearer {TOKEN}", f"Bearer {FRESH_TOKEN}"]


def test_small_post_is_replayed_byte_identical(client: httpx.Client, upstream: Upstream, bearer: StubBearer) -> None:
    response = client.post("/api/up/protected", content=SMALL)
    assert response.status_code == 200
    assert (response.json()["body_sha256"], response.json()["body_length"]) == (sha(SMALL), len(SMALL))
    assert [seen.body_sha256 for seen in upstream.state.seen] == [sha(SMALL), sha(SMALL)]
    assert bearer.refreshed == [TOKEN]


def test_small_chunked_post_is_kept_while_streaming_and_replayed(
    client: httpx.Client, upstream: Upstream, bearer: StubBearer
) -> None:
    def chunks() -> Iterator[bytes]:
        yield SMALL[:100]
        yield SMALL[100:]

    response = client.post("/api/up/protected", content=chunks())
    assert response.status_code == 200
    assert [seen.body_sha256 for seen in upstream.state.seen] == [sha(SMALL), sha(SMALL)]
    assert bearer.refreshed == [TOKEN]


def test_a_second_401_passes_through(client: httpx.Client, upstream: Upstream, bearer: StubBearer) -> None:
    bearer.fresh = "also-rejected"
    response = client.get("/api/up/protected")
    assert response.status_code == 401
    assert response.json() == {"upstream": "token rejected"}
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert bearer.refreshed == [TOKEN]
    assert authorizations(upstream) == [f"Bearer {TOKEN}", "Bearer also-rejected"]


def test_no_fresh_token_passes_the_401_through(client: httpx.Client, upstream: Upstream, bearer: StubBearer) -> None:
    bearer.fresh = None
    response = client.get("/api/up/protected")
    assert response.status_code == 401
    assert response.json() == {"upstream": "token rejected"}
    assert bearer.refreshed == [TOKEN]
    assert len(upstream.state.seen) == 1


def test_refresh_failure_is_the_answer(client: httpx.Client, upstream: Upstream, bearer: StubBearer) -> None:
    bearer.refresh_error = SessionExpired("refresh token rejected")
    response = client.get("/api/up/protected")
    assert response.status_code == 401
    assert response.json()["error"] == "session_expired"
    assert response.headers["x-bff-error"] == "session_expired"
    assert bearer.refreshed == [TOKEN]
    assert len(upstream.state.seen) == 1


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_the_replay_limit_is_not_replayed(
    client: httpx.Client, upstream: Upstream, bearer: StubBearer, chunked: bool
) -> None:
    def chunks() -> Iterator[bytes]:
        yield BIG[:1000]
        yield BIG[1000:]

    response = client.post("/api/up/protected", content=chunks() if chunked else BIG)
    assert response.status_code == 401
    assert response.json() == {"upstream": "token rejected"}
    assert bearer.refreshed == []
    assert [seen.body_sha256 for seen in upstream.state.seen] == [sha(BIG)]


def test_plain_401_is_not_refreshed_by_default(client: httpx.Client, upstream: Upstream, bearer: StubBearer) -> None:
    response = client.get("/api/up/protected", params={"plain": "1"})
    assert response.status_code == 401
    assert bearer.refreshed == []
    assert len(upstream.state.seen) == 1


def test_plain_401_is_refreshed_on_a_refresh_on_401_route(
    client: httpx.Client, upstream: Upstream, bearer: StubBearer
) -> None:
    response = client.get("/api/plain401", params={"plain": "1"})
    assert response.status_code == 200
    assert bearer.refreshed == [TOKEN]
    assert authorizations(upstream) == [f"Bearer {TOKEN}", f"Bearer {FRESH_TOKEN}"]


def test_anonymous_request_is_never_refreshed(client: httpx.Client, upstream: Upstream, bearer: StubBearer) -> None:
    response = client.get("/api/anon-protected")
    assert response.status_code == 401
    assert bearer.refreshed == []
    assert authorizations(upstream) == [None]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b'Bearer error="invalid_token"', True),
        (b'Bearer realm="api", error="invalid_token", error_description="The access token expired"', True),
        (b"bearer error=invalid_token", True),
        (b'BEARER ERROR = "INVALID_TOKEN"', True),
        (b'Basic realm="x", Bearer error="invalid_token"', True),
        (b'Bearer realm="api"', False),
        (b'Bearer error="insufficient_scope"', False),
        (b'Bearer error_description="invalid_token"', False),
        (b'Basic realm="invalid_token"', False),
        (b"", False),
    ],
)
def test_invalid_token_challenge_parsing(value: bytes, expected: bool) -> None:
    assert is_invalid_token_challenge([(b"WWW-Authenticate", value)]) is expected
    assert is_invalid_token_challenge([(b"x-other", b'Bearer error="invalid_token"')]) is False
