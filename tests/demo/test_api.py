"""The demo API as a real server on loopback, against a real JWKS/discovery/blocklist server, with tokens minted
(and forged) here. The API runs on a fake clock: expiry, the blocklist interval and the JWKS refetch rate limit are
moved by hand."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from bff_devtools.demo.api import DemoApiSettings, create_demo_api
from tests.support.clock import FakeClock
from tests.support.key_server import KeyServer, ec_key
from tests.support.servers import serve

BOUND = 10


@dataclass
class Api:
    url: str
    keys: KeyServer
    clock: FakeClock
    http: httpx.AsyncClient

    async def get(self, path: str, token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return await self.http.get(self.url + path, headers=headers)


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def key_server(fake_clock: FakeClock) -> Iterator[KeyServer]:
    keys = KeyServer(fake_clock)
    with serve(keys.app) as url:
        keys.issuer = url
        yield keys


def _settings(key_server: KeyServer, **overrides: float) -> DemoApiSettings:
    base = {"issuer": key_server.issuer, "tick_interval": 0.3, "max_slow": 0.5, "jwks_min_refetch_interval": 10.0}
    return DemoApiSettings(**{**base, **overrides})  # type: ignore[arg-type]


@pytest.fixture
async def api(key_server: KeyServer, fake_clock: FakeClock) -> AsyncIterator[Api]:
    with serve(create_demo_api(_settings(key_server), clock=fake_clock), lifespan="on") as url:
        async with httpx.AsyncClient(timeout=BOUND) as http:
            yield Api(url, key_server, fake_clock, http)


def _error(response: httpx.Response) -> tuple[int, str, str]:
    return response.status_code, response.json()["error"], response.headers.get("www-authenticate", "")


async def test_valid_tokens(api: Api) -> None:
    token = api.keys.mint(sub="alice", role="admin")
    me = await api.get("/me", token)
    assert me.status_code == 200
    body = me.json()
    assert (body["sub"], body["role"], body["scope"]) == ("alice", "admin", ["openid", "profile"])
    assert body["token_expires_at"] == int(api.clock()) + 300
    assert body["token_expires_in"] == 300
    assert token not in me.text
    items = await api.get("/items", api.keys.mint(kid="rsa-1", sub="bob"))  # RS256 too
    assert items.status_code == 200
    assert items.json()["owner"] == "bob"
    assert len(items.json()["items"]) >= 3


async def test_no_token_is_a_bare_bearer_challenge(api: Api) -> None:
    for headers in ({}, {"Authorization": "Basic YWxpY2U6c2VjcmV0"}, {"Authorization": "Bearer"}):
        response = await api.http.get(api.url + "/me", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer realm="demo-api"'


BAD_TOKENS: dict[str, Callable[[KeyServer], str]] = {
    "alg none": lambda k: k.forge_alg_none(),
    "HS256 keyed with the public key": lambda k: k.forge_hs256_with_public_key(),
    "signed by another key with a known kid": lambda k: k.mint(key=ec_key("ec-1")),
    "wrong issuer": lambda k: k.mint(iss="https://evil.example"),
    "wrong audience": lambda k: k.mint(aud="another-api"),
    "audience list without this api": lambda k: k.mint(aud=["a", "b"]),
    "expired": lambda k: k.mint(exp=int(k.clock()) - 60),
    "issued in the future": lambda k: k.mint(iat=int(k.clock()) + 600),
    "an ID token (typ JWT)": lambda k: k.mint(typ="JWT"),
    "no typ": lambda k: k.mint(typ=None),
    "no jti": lambda k: k.mint(jti=None),
    "no sub": lambda k: k.mint(sub=None),
    "not a JWT": lambda k: "opaque-token",
    "garbage segments": lambda k: "a.b.c",
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
async def test_bad_tokens_are_invalid_token(api: Api, case: str) -> None:
    response = await api.get("/me", BAD_TOKENS[case](api.keys))
    status, error, challenge = _error(response)
    assert (status, error) == (401, "invalid_token")
    assert challenge.startswith('Bearer realm="demo-api", error="invalid_token", error_description="')
    assert response.json()["error_description"]


async def test_unknown_kid_refetches_the_jwks_once_per_interval(api: Api) -> None:
    assert (await api.get("/me", api.keys.mint())).status_code == 200
    assert api.keys.jwks_fetches == 1
    api.keys.keys.append(ec_key("ec-2"))  # the IdP rotates
    assert (await api.get("/me", api.keys.mint(kid="ec-2"))).status_code == 200
    assert api.keys.jwks_fetches == 2
    # Made-up kids cannot make the API hammer the IdP: no refetch within the interval.
    for _ in range(3):
        response = await api.get("/me", api.keys.mint(key=ec_key("nope"), kid="nope"))
        assert _error(response)[:2] == (401, "invalid_token")
    assert api.keys.jwks_fetches == 2
    api.keys.keys.append(ec_key("ec-3"))
    api.clock.advance(11)
    assert (await api.get("/me", api.keys.mint(kid="ec-3"))).status_code == 200
    assert api.keys.jwks_fetches == 3


async def test_blocklisted_jti_is_refused_within_the_poll_interval(api: Api) -> None:
    jti = "jti-to-revoke"
    token = api.keys.mint(jti=jti)
    assert (await api.get("/me", token)).status_code == 200
    api.keys.revoked[jti] = int(api.clock()) + 300
    for _ in range(3):  # cached for up to 2 s: the list is not fetched for every request
        assert (await api.get("/items", token)).status_code == 200
    assert api.keys.blocklist_fetches == 1
    api.clock.advance(2.1)
    response = await api.get("/me", token)
    assert _error(response)[:2] == (401, "invalid_token")
    assert "revoked" in response.json()["error_description"]
    assert api.keys.blocklist_fetches == 2
    assert (await api.get("/me", api.keys.mint())).status_code == 200  # other tokens still pass


async def test_blocklist_outage(api: Api) -> None:
    assert (await api.get("/me", api.keys.mint())).status_code == 200
    api.keys.blocklist_status = 500
    api.clock.advance(20)  # refetch fails: the last copy is still fresh enough
    assert (await api.get("/me", api.keys.mint())).status_code == 200
    api.clock.advance(15)  # now older than max_stale (30 s): revocation cannot be checked
    response = await api.get("/me", api.keys.mint())
    assert (response.status_code, response.json()["error"]) == (503, "temporarily_unavailable")
    api.keys.blocklist_status = 200
    api.clock.advance(3)
    assert (await api.get("/me", api.keys.mint())).status_code == 200


async def test_blocklist_never_loaded_is_503(key_server: KeyServer, fake_clock: FakeClock) -> None:
    key_server.blocklist_status = 503
    with serve(create_demo_api(_settings(key_server), clock=fake_clock), lifespan="on") as url:
        async with httpx.AsyncClient(timeout=BOUND) as http:
            response = await http.get(url + "/me", headers={"Authorization": f"Bearer {key_server.mint()}"})
    assert response.status_code == 503


async def test_admin_stats_is_role_gated(api: Api) -> None:
    response = await api.get("/admin/stats", api.keys.mint(sub="bob", role="user"))
    status, error, challenge = _error(response)
    assert (status, error) == (403, "insufficient_scope")
    assert 'error="insufficient_scope"' in challenge
    assert (await api.get("/admin/stats", api.keys.mint(sub="alice", role="admin"))).status_code == 200
    assert (await api.get("/admin/stats", api.keys.mint(role=None))).status_code == 403


async def test_slow_is_bounded(api: Api) -> None:
    token = api.keys.mint()
    assert (await api.get("/slow?seconds=0.1", token)).json() == {"requested": 0.1, "slept": 0.1}
    started = time.monotonic()
    assert (await api.get("/slow?seconds=100000", token)).json()["slept"] == 0.5
    assert time.monotonic() - started < 5
    for bad in ("abc", "-1", "nan"):
        assert (await api.get(f"/slow?seconds={bad}", token)).status_code == 400
    assert (await api.get("/slow?seconds=0")).status_code == 401


async def test_ticks_arrive_one_by_one(api: Api) -> None:
    arrivals: list[tuple[float, str]] = []
    headers = {"Authorization": f"Bearer {api.keys.mint()}"}
    async with api.http.stream("GET", api.url + "/ticks?n=3", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                arrivals.append((time.monotonic(), line))
    ticks = [(at, line) for at, line in arrivals if '"tick"' in line]
    assert [f'"tick": {i}' in line for i, (_, line) in enumerate(ticks, 1)] == [True, True, True]
    assert arrivals[-1][1] == "data: {}"  # the done event
    gaps = [later[0] - earlier[0] for earlier, later in itertools.pairwise(ticks)]
    assert all(gap >= 0.2 for gap in gaps), gaps  # tick_interval 0.3 s: streamed, not buffered
    assert (await api.get("/ticks")).status_code == 401


async def test_public_endpoints(api: Api) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    info = (await api.get("/public/info")).json()
    assert info == {"issuer": api.keys.issuer, "admin_url": api.keys.issuer + "/admin", "audience": "demo-api"}


async def test_the_live_websocket_checks_the_bearer_token_on_the_handshake(api: Api) -> None:
    ws_url = api.url.replace("http://", "ws://") + "/live"
    for headers in ({}, {"Authorization": "Bearer not-a-jwt"}):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url, additional_headers=headers, open_timeout=BOUND):
                pass
        assert refused.value.response.status_code == 401
    token = api.keys.mint(sub="alice", role="user")
    async with connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=BOUND) as ws:
        first = json.loads(await ws.recv())
        assert (first["tick"], first["for"]) == (1, "alice")
        await ws.send("hi")
        while "chat" not in (message := json.loads(await ws.recv())):
            assert message["for"] == "alice"
        assert (message["chat"], message["from"]) == ("hi", "alice")
