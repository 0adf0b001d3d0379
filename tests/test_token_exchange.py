"""Token exchange per route (RFC 8693) end to end: real ``bff serve`` processes sharing one real Redis, the reference
IdP (which implements the grant with an audience allow-list per client) and upstreams on loopback that check the
``aud`` of the token they get against the IdP's JWKS, as a real API does.

* each exchange route gets a token for its own audience, cached per session and route; no route ever sees another
  route's token (nor the login's);
* many concurrent requests through two instances: one exchange;
* an expired exchanged token is exchanged again with the session's CURRENT access token (refreshed first);
* an upstream 401 ``invalid_token`` re-exchanges once, never in a loop;
* a refused exchange is a clear JSON 502 and the session lives on; an IdP that is down is a 503 like a refresh;
* ``bff_token_exchange_total{outcome}`` (scraped from each process's metrics listener) counts each of these, and
  ``bff_token_refresh_total`` none of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from prometheus_client.parser import text_string_to_metric_families

from bff.config import load_config
from bff.session.manager import SessionManager
from bff.session.redis_store import RedisStore
from bff.tokens.route_tokens import route_token_key
from bff.types import Receive, Scope, Send
from bff_devtools.devidp import ClientRegistration, DevIdPSettings, create_devidp_app
from bff_devtools.devidp.settings import TOKEN_EXCHANGE
from tests.support.asgi import read_body, replaying
from tests.support.bff_process import start_bff, wait_ready
from tests.support.browser import Browser
from tests.support.configs import SESSION_KEY
from tests.support.devidp import FORM, login_tx
from tests.support.leak_guard import fingerprint
from tests.support.redis_server import RedisProcess
from tests.support.servers import free_port, serve
from tests.support.sessions import expire_access_token
from tests.support.stack import bound_socket

XHR = {"X-CSRF": "1"}
SECRET = "exchange-client-secret-0123456789"
#: Audiences the client may exchange for; "ledger-api" is not among them.
ALLOWED = ("orders-api", "billing-api")
CONCURRENT = 40


class TokenEndpointTap:
    """ASGI middleware in front of the IdP: counts token requests by grant, records the fingerprint of every
    exchange's subject token, and while ``down`` answers the token endpoint 503 (an IdP failing)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.grants: Counter[str] = Counter()
        self.subjects: list[str] = []
        self.down = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/token":
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        form = dict(parse_qsl(body.decode()))
        if self.down:
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        grant = form.get("grant_type", "")
        self.grants[grant] += 1
        if grant == TOKEN_EXCHANGE:
            self.subjects.append(fingerprint(form.get("subject_token", "")))
        await self.app(scope, replaying(body, receive), send)

    @property
    def exchanges(self) -> int:
        return self.grants[TOKEN_EXCHANGE]


@dataclass
class AudienceApi:
    """An upstream that accepts only a valid token of the IdP's (signature by its JWKS) whose ``aud`` is its own;
    answers with the token's fingerprint and claims (never the token), or 401 ``invalid_token``. Tokens in
    ``rejected`` (by fingerprint) are refused too, as a revoked token would be."""

    audience: str
    idp_url: str
    seen: list[str] = field(default_factory=list)
    rejected: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = dict(scope["headers"]).get(b"authorization", b"").removeprefix(b"Bearer ").decode()
        with self.lock:
            self.seen.append(fingerprint(token))
        claims = await self._verify(token)
        if claims is None or fingerprint(token) in self.rejected:
            challenge = b'Bearer error="invalid_token"'
            await send({"type": "http.response.start", "status": 401, "headers": [(b"www-authenticate", challenge)]})
            await send({"type": "http.response.body", "body": b""})
            return
        body = json.dumps({"token": fingerprint(token), "aud": claims["aud"], "sub": claims["sub"]}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    async def _verify(self, token: str) -> dict[str, Any] | None:
        async with httpx.AsyncClient() as http:
            keys = KeySet.import_key_set((await http.get(f"{self.idp_url}/jwks")).json())
        try:
            decoded = jwt.decode(token, keys, algorithms=["ES256", "RS256"])
        except (JoseError, ValueError):
            return None
        claims = dict(decoded.claims)
        return claims if claims.get("aud") == self.audience and claims.get("iss") == self.idp_url else None


@dataclass
class World:
    ports: list[int]
    metrics_ports: list[int]
    config: Path
    idp_url: str
    tap: TokenEndpointTap
    apis: dict[str, AudienceApi]
    redis_url: str
    logs: list[Path]

    def url(self, path: str, instance: int = 0) -> str:
        return f"http://127.0.0.1:{self.ports[instance]}{path}"

    def counts(self, family: str) -> dict[str, float]:
        """``family``'s nonzero samples by outcome, summed over the instances."""
        out: dict[str, float] = {}
        for port in self.metrics_ports:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            for parsed in text_string_to_metric_families(text):
                for sample in parsed.samples:
                    if sample.name == family and sample.value:
                        outcome = sample.labels["outcome"]
                        out[outcome] = out.get(outcome, 0) + sample.value
        return out


def _config(port: int, metrics_port: int, redis_url: str, idp_url: str, upstreams: dict[str, str]) -> str:
    return f"""
[server]
listen = "127.0.0.1:{port}"
public_origin = "http://127.0.0.1:{port}"

[session]
store = "{redis_url}"
keys = ["{SESSION_KEY}"]

[oidc]
issuer = "{idp_url}"
client_id = "spa-bff"
client_secret = "{SECRET}"
timeout = "5s"  # a loaded machine: 40 requests wait on one refresh, then one exchange

[metrics]
listen = "127.0.0.1:{metrics_port}"

[[routes]]
path = "/api"
upstream = "{upstreams["demo-api"]}"

[[routes]]
path = "/orders"
upstream = "{upstreams["orders-api"]}"
exchange = {{ audience = "orders-api", scope = "openid orders:read" }}

[[routes]]
path = "/orders-mirror"
upstream = "{upstreams["orders-mirror"]}"
exchange = {{ audience = "orders-api", scope = "openid orders:read" }}

[[routes]]
path = "/billing"
upstream = "{upstreams["billing-api"]}"
exchange = {{ audience = "billing-api" }}

[[routes]]
path = "/ledger"
upstream = "{upstreams["ledger-api"]}"
exchange = {{ audience = "ledger-api" }}
"""


@contextlib.contextmanager
def world(tmp_path: Path, redis: RedisProcess, instances: int = 1) -> Iterator[World]:
    """``instances`` bff processes on one Redis (one config: a session key ring, one public origin, since the
    browser's cookie goes to each), the reference IdP behind a tap, and one audience-checking API per audience."""
    ports = [free_port() for _ in range(instances)]
    metrics_ports = [free_port() for _ in range(instances)]
    idp_sock = bound_socket()
    idp_url = f"http://127.0.0.1:{idp_sock.getsockname()[1]}"
    origins = [f"http://127.0.0.1:{port}" for port in ports]
    registration = ClientRegistration(
        "spa-bff",
        SECRET,
        redirect_uris=tuple(f"{o}/bff/callback" for o in origins),
        post_logout_redirect_uris=tuple(f"{o}/" for o in origins),
        grant_types=("authorization_code", "refresh_token", TOKEN_EXCHANGE),
        scope="openid profile email offline_access orders:read",
        exchange_audiences=ALLOWED,
    )
    settings = DevIdPSettings(issuer=idp_url, data_dir=tmp_path / "idp", clients=(registration,))
    tap = TokenEndpointTap(create_devidp_app(settings))
    apis = {aud: AudienceApi(aud, idp_url) for aud in ("demo-api", "orders-api", "billing-api", "ledger-api")}
    apis["orders-mirror"] = AudienceApi("orders-api", idp_url)  # a second route exchanging for the same audience
    with contextlib.ExitStack() as stack:
        stack.enter_context(serve(tap, sock=idp_sock))
        upstreams = {aud: stack.enter_context(serve(api, lifespan="off")) for aud, api in apis.items()}
        configs = []
        for i, port in enumerate(ports):
            config = tmp_path / f"bff{i}.toml"
            config.write_text(_config(port, metrics_ports[i], redis.url, idp_url, upstreams))
            configs.append(config)
        processes = []
        for i, (config, port) in enumerate(zip(configs, ports, strict=True)):
            log = tmp_path / f"bff{i}.log"
            process = start_bff(config, port, log)
            stack.callback(process.wait, 10)
            stack.callback(process.terminate)
            processes.append((process, log, port))
        for process, log, port in processes:
            wait_ready(port, process, log)
        yield World(ports, metrics_ports, configs[0], idp_url, tap, apis, redis.url, [log for _, log, _ in processes])


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    b = Browser()
    yield b
    await b.aclose()


async def sign_in(browser: Browser, w: World) -> dict[str, str]:
    """Log in as alice through instance 0; returns the request headers of the SPA (cookie and X-CSRF)."""
    hops = await browser.follow(w.url("/bff/login"))
    body = f"tx={login_tx(hops[-1])}&username=alice&password=wonderland".encode()
    submitted = await browser.request("POST", f"{w.idp_url}/login", headers=FORM, content=body)
    assert submitted.status_code == 302, submitted.text
    await browser.follow(submitted.headers["location"])
    return {**XHR, "cookie": f"__Host-bff={browser.cookies(w.url('/'))['__Host-bff']}"}


#: One bff instance (:func:`world`), the SPA's request headers once alice signed in through it, an HTTP client.
SignedIn = tuple[World, dict[str, str], httpx.AsyncClient]


@pytest.fixture
async def signed_in(tmp_path: Path, redis_process: RedisProcess, browser: Browser) -> AsyncIterator[SignedIn]:
    with world(tmp_path, redis_process) as w:
        headers = await sign_in(browser, w)
        async with httpx.AsyncClient(timeout=10) as http:
            yield w, headers, http


@contextlib.asynccontextmanager
async def sessions_of(w: World) -> AsyncIterator[SessionManager]:
    """A SessionManager of the test's own on the processes' store and key ring."""
    store = RedisStore.from_url(w.redis_url)
    try:
        yield SessionManager(store, load_config(w.config).session)
    finally:
        await store.aclose()


async def expire_route_token(w: World, headers: dict[str, str], path: str) -> None:
    """Make the exchanged token of route ``path`` look expired in the session, as if its lifetime had passed."""
    config = load_config(w.config)
    route = next(r for r in config.routes if r.path == path)
    key = route_token_key(route)
    assert key is not None
    async with sessions_of(w) as sessions:
        session_id = sessions.session_id_from_cookie(headers["cookie"].partition("=")[2])
        assert session_id is not None
        loaded = await sessions.load(session_id)
        assert loaded is not None
        old = loaded.session.route_tokens[key]
        expired = type(old)(access_token=old.access_token, token_type=old.token_type, expires_at=1.0, scope=old.scope)
        route_tokens = {**loaded.session.route_tokens, key: expired}
        assert await sessions.replace(loaded, loaded.session.evolve(route_tokens=route_tokens)) is not None


async def expire_user_token(w: World, headers: dict[str, str]) -> str:
    async with sessions_of(w) as sessions:
        session_id = sessions.session_id_from_cookie(headers["cookie"].partition("=")[2])
        assert session_id is not None
        return (await expire_access_token(sessions, session_id)).session.tokens.access_token


async def test_each_exchange_route_gets_a_token_for_its_own_audience_and_no_other_routes_token(
    signed_in: SignedIn,
) -> None:
    w, headers, http = signed_in
    answers: dict[str, set[str]] = {}
    for path in (
        "/api",
        "/orders",
        "/billing",
        "/orders-mirror",
        "/orders",
        "/billing",
        "/orders-mirror",
        "/api",
    ):
        response = await http.get(w.url(path + "/x"), headers=headers)
        assert response.status_code == 200, (path, response.text)
        answers.setdefault(path, set()).add(response.json()["token"])
    assert {p: len(tokens) for p, tokens in answers.items()} == {p: 1 for p in answers}
    assert w.tap.exchanges == 3, "one exchange per route, then the cached token"
    # Every API saw only tokens for itself (its aud check let each request through), and no token reached two
    # APIs, not even the two routes that exchange for the same audience.
    seen = {name: set(api.seen) for name, api in w.apis.items() if api.seen}
    assert set(seen) == {"demo-api", "orders-api", "orders-mirror", "billing-api"}
    assert sum(len(tokens) for tokens in seen.values()) == len(set().union(*seen.values())) == 4
    # The subject of both exchanges was the login's access token (the one the plain route got).
    assert set(w.tap.subjects) == seen["demo-api"]
    assert w.counts("bff_token_exchange_total") == {"ok": 3}
    assert w.counts("bff_token_refresh_total") == {}


@pytest.mark.parametrize("login_expired", [False, True], ids=["login-token-valid", "login-token-expired"])
async def test_many_concurrent_requests_through_two_instances_exchange_once(
    tmp_path: Path, redis_process: RedisProcess, browser: Browser, login_expired: bool
) -> None:
    """And when the login's token has expired too: one refresh, then one exchange with the refreshed token."""
    with world(tmp_path, redis_process, instances=2) as w:
        headers = await sign_in(browser, w)
        if login_expired:
            await expire_user_token(w, headers)
        async with httpx.AsyncClient(timeout=30) as http:
            responses = await asyncio.gather(
                *(http.get(w.url("/orders/items", i % 2), headers=headers) for i in range(CONCURRENT))
            )
        assert [r.status_code for r in responses] == [200] * CONCURRENT, {r.text for r in responses}
        assert len({r.json()["token"] for r in responses}) == 1
        assert {r.json()["aud"] for r in responses} == {"orders-api"}
        assert w.tap.exchanges == 1
        assert w.tap.grants["refresh_token"] == (1 if login_expired else 0)
        counted = w.counts("bff_token_exchange_total")
        assert counted["ok"] == 1
        assert set(counted) <= {"ok", "joined"}
        assert sum(counted.values()) <= CONCURRENT


async def test_an_expired_exchanged_token_is_exchanged_again_with_the_current_user_token(signed_in: SignedIn) -> None:
    w, headers, http = signed_in
    first = await http.get(w.url("/orders/1"), headers=headers)
    assert first.status_code == 200, first.text
    # Both the exchanged token and the login's token expire; the IdP must get a fresh subject token.
    await expire_route_token(w, headers, "/orders")
    old_user_token = await expire_user_token(w, headers)
    second = await http.get(w.url("/orders/1"), headers=headers)
    assert second.status_code == 200, second.text
    plain = await http.get(w.url("/api/1"), headers=headers)
    assert second.json()["token"] != first.json()["token"]
    assert w.tap.exchanges == 2
    assert w.tap.grants["refresh_token"] == 1, "the login's token was refreshed once, for the exchange"
    assert w.tap.subjects == [fingerprint(old_user_token), plain.json()["token"]]
    assert w.counts("bff_token_exchange_total") == {"ok": 2}
    assert w.counts("bff_token_refresh_total") == {}, "the login's refresh for an exchange is the exchange's"


async def test_an_upstream_401_re_exchanges_once_and_never_loops(signed_in: SignedIn) -> None:
    w, headers, http = signed_in
    orders = w.apis["orders-api"]
    first = await http.get(w.url("/orders/1"), headers=headers)
    orders.rejected.add(first.json()["token"])  # revoked, as far as the API knows
    second = await http.get(w.url("/orders/1"), headers=headers)
    assert second.status_code == 200, second.text
    assert second.json()["token"] != first.json()["token"]
    assert w.tap.exchanges == 2
    # An API that refuses every token: one re-exchange, then its 401 goes to the browser.
    orders.rejected.update({second.json()["token"]})
    orders.audience = "nobody"
    third = await http.get(w.url("/orders/1"), headers=headers)
    assert third.status_code == 401
    assert w.tap.exchanges == 3
    assert w.tap.grants["refresh_token"] == 0, "a route's 401 re-exchanges; it does not refresh the login"
    assert w.counts("bff_token_exchange_total") == {"ok": 3}


async def test_a_refused_exchange_is_a_clear_502_and_the_session_lives_on(signed_in: SignedIn) -> None:
    w, headers, http = signed_in
    refused = await http.get(w.url("/ledger/1"), headers=headers)
    assert refused.status_code == 502
    assert refused.json()["error"] == "token_exchange_refused"
    assert "invalid_target" in refused.json()["message"]
    assert refused.headers["content-type"] == "application/json"
    assert w.apis["ledger-api"].seen == [], "nothing was forwarded"
    assert (await http.get(w.url("/orders/1"), headers=headers)).status_code == 200
    assert (await http.get(w.url("/api/1"), headers=headers)).status_code == 200
    assert (await http.get(w.url("/bff/user"), headers=headers)).status_code == 200
    assert w.counts("bff_token_exchange_total") == {"refused": 1, "ok": 1}
    log = w.logs[0].read_text()
    assert "refused the token exchange for route /ledger: invalid_target" in log
    assert all(token.removeprefix("sha256:") not in log for token in w.apis["demo-api"].seen)


async def test_an_idp_that_is_down_is_a_503_and_exchanges_resume_when_it_answers(signed_in: SignedIn) -> None:
    w, headers, http = signed_in
    w.tap.down = True
    down = await http.get(w.url("/orders/1"), headers=headers)
    assert down.status_code == 503
    assert down.json()["error"] == "temporarily_unavailable"
    assert down.headers["retry-after"] == "1"
    assert w.apis["orders-api"].seen == []
    assert (await http.get(w.url("/api/1"), headers=headers)).status_code == 200, "the session lives on"
    w.tap.down = False
    for _ in range(200):  # the IdP probe notices the IdP is back (Retry-After: 1)
        resumed = await http.get(w.url("/orders/1"), headers=headers)
        if resumed.status_code != 503:
            break
        await asyncio.sleep(0.05)
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["aud"] == "orders-api"
    assert w.tap.exchanges == 1
    counted = w.counts("bff_token_exchange_total")
    assert counted.pop("ok") == 1
    assert set(counted) == {"idp_unavailable"}
