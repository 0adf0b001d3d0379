"""An upstream's 401 ``insufficient_user_authentication`` (RFC 9470) becomes 401 ``step_up_required`` with a login
URL; it is never refreshed and replayed; a malformed one passes through as the upstream sent it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.proxy.conftest import StubBearer, Upstream, run_proxy, standard_routes

STEP_UP = 'Bearer realm="api", error="insufficient_user_authentication", acr_values="urn:mfa", max_age=300'


@pytest.mark.parametrize("path", ["/api/up/protected", "/api/plain401"])
def test_step_up_challenge_becomes_step_up_required(
    client: httpx.Client, upstream: Upstream, bearer: StubBearer, path: str
) -> None:
    response = client.post(path, params={"challenge": STEP_UP}, content=b"{}")
    assert response.status_code == 401
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-bff-error"] == "step_up_required"
    assert response.json() == {
        "error": "step_up_required",
        "message": response.json()["message"],
        "acr_values": "urn:mfa",
        "max_age": 300,
        "login_url": "/bff/login?acr_values=urn:mfa&max_age=300",
    }
    assert "www-authenticate" not in response.headers
    # Not invalid_token: no refresh and no replay, even on a refresh_on_401 route.
    assert bearer.refreshed == []
    assert len(upstream.state.seen) == 1


@pytest.mark.parametrize(
    "challenge",
    [
        'Bearer error="insufficient_user_authentication"',  # asks for nothing
        'Bearer error="insufficient_user_authentication", acr_values="x\\"y"',
        'Bearer error="insufficient_user_authentication", max_age=soon',
        'Bearer error="insufficient_user_authentication", max_age=1, realm="unterminated',
    ],
)
def test_malformed_step_up_passes_the_401_through(
    client: httpx.Client, upstream: Upstream, bearer: StubBearer, challenge: str
) -> None:
    response = client.get("/api/up/protected", params={"challenge": challenge})
    assert response.status_code == 401
    assert response.json() == {"upstream": "token rejected"}
    assert response.headers["www-authenticate"] == challenge
    assert bearer.refreshed == []


def test_anonymous_requests_get_no_step_up(client: httpx.Client, bearer: StubBearer) -> None:
    # No token was sent: there is no login to step up.
    response = client.get("/api/anon-protected", params={"challenge": STEP_UP})
    assert response.status_code == 401
    assert response.json() == {"upstream": "token rejected"}


@pytest.fixture
def allow_listed(upstream: Upstream) -> Iterator[httpx.Client]:
    bearer = StubBearer()
    with (
        run_proxy(standard_routes(upstream.url), bearer, acr_values_allowed=("urn:pwd",)) as url,
        httpx.Client(base_url=url, headers={"X-CSRF": "1"}, timeout=10) as client,
    ):
        yield client


def test_values_outside_the_allow_list_pass_through(allow_listed: httpx.Client) -> None:
    response = allow_listed.get("/api/up/protected", params={"challenge": STEP_UP})
    assert response.status_code == 401
    assert response.json() == {"upstream": "token rejected"}
    ok = 'Bearer error="insufficient_user_authentication", acr_values="urn:pwd"'
    assert allow_listed.get("/api/up/protected", params={"challenge": ok}).json()["error"] == "step_up_required"
