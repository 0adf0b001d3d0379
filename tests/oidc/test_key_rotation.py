"""The reference IdP rotates its signing key while someone floods bff's public back-channel logout endpoint with
logout tokens naming made-up ``kid`` values: logins and refreshes keep working.

All real servers on loopback: the reference IdP (``bff_devtools.devidp``), bff, and an API upstream that records the
bearer tokens it gets. The flood spends the rate-limited JWKS refetch that tokens from outside may use; the ID tokens
that bff receives from the token endpoint after the rotation must still get their own refetch at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bff.app import BffApp
from bff.session.memory_store import MemoryStore
from bff_devtools.devidp.keys import rotate_key
from tests.support.browser import Browser
from tests.support.configs import base_document, make_config
from tests.support.devidp import FORM, IdP, client, login_tx, running_devidp
from tests.support.servers import serve
from tests.support.stack import bound_socket

XHR = {"X-CSRF": "1"}
CLIENT_ID = "spa-bff"
SECRET = "rotation-test-client-secret-0123456789"
BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"


@dataclass
class Api:
    """An upstream that answers 200 and remembers each bearer token it was sent (never echoing it)."""

    bearers: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.app = Starlette(routes=[Route("/{path:path}", self.handle)])

    async def handle(self, request: Request) -> Response:
        self.bearers.append(request.headers.get("authorization", ""))
        return JSONResponse({"ok": True})


@dataclass(frozen=True)
class World:
    idp: IdP
    data_dir: Path
    bff: str
    api: Api


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    sock = bound_socket()
    origin = f"http://127.0.0.1:{sock.getsockname()[1]}"
    registration = client(
        CLIENT_ID, SECRET, redirect_uri=f"{origin}/bff/callback", post_logout_redirect_uri=f"{origin}/"
    )
    data_dir = tmp_path / "idp-keys"
    api = Api()
    with contextlib.ExitStack() as stack:
        # 3 s access tokens, refreshed by bff within 2 s of expiry: a refresh is due about a second after login.
        idp = stack.enter_context(running_devidp(data_dir, (registration,), access_token_ttl=3))
        api_url = stack.enter_context(serve(api.app))
        doc = base_document(public_origin=origin, issuer=idp.url)
        doc["oidc"].update(client_id=CLIENT_ID, client_secret=SECRET)
        doc["routes"] = [{"path": "/api", "upstream": api_url, "token": "user"}]
        doc["tokens"] = {"refresh_leeway": "2s"}
        url = stack.enter_context(serve(BffApp(make_config(doc), store=MemoryStore()), sock=sock))
        yield World(idp, data_dir, url, api)


async def sign_in(browser: Browser, world: World) -> httpx.Response:
    """bff's login through the IdP's form (or single sign-on); returns bff's answer to the callback."""
    hops = await browser.follow(f"{world.bff}/bff/login")
    if hops[-1].status_code == 200 and "name='tx'" in hops[-1].text:
        body = f"tx={login_tx(hops[-1])}&username=alice&password=wonderland".encode()
        submitted = await browser.request("POST", f"{world.idp.url}/login", headers=FORM, content=body)
        assert submitted.status_code == 302, submitted.text
        hops = [submitted, *await browser.follow(submitted.headers["location"])]
    callback = next(hop for hop in hops if hop.url.path == "/bff/callback")
    return callback


def forged_logout_token(issuer: str, attacker: ECKey) -> str:
    """A well-formed logout token for alice, signed by the attacker under a ``kid`` the IdP never published."""
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": CLIENT_ID,
        "iat": now,
        "exp": now + 120,
        "jti": secrets.token_hex(16),
        "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
        "sub": "alice-0001",
    }
    header = {"alg": "ES256", "kid": f"made-up-{secrets.token_hex(6)}", "typ": "logout+jwt"}
    return jwt.encode(header, claims, attacker, algorithms=["ES256"])


async def flood(world: World, answers: list[httpx.Response], stop: asyncio.Event, started: asyncio.Event) -> None:
    """Post a forged logout token every 100 ms until ``stop``; set ``started`` after the third answer."""
    attacker = ECKey.generate_key("P-256")
    async with httpx.AsyncClient(timeout=10) as http:
        while not stop.is_set():
            token = forged_logout_token(world.idp.url, attacker)
            answers.append(
                await http.post(f"{world.bff}/bff/backchannel-logout", data={"logout_token": token}, timeout=10)
            )
            if len(answers) >= 3:
                started.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)


async def test_logins_and_refreshes_survive_a_key_rotation_under_a_forged_kid_flood(
    world: World, browsers: Callable[[], Browser]
) -> None:
    before = browsers()
    async with asyncio.timeout(60):
        assert (await sign_in(before, world)).status_code == 302
        refresh_due = time.monotonic() + 1.2
        assert (await before.request("GET", f"{world.bff}/api/orders", headers=XHR)).status_code == 200

        answers: list[httpx.Response] = []
        stop, started = asyncio.Event(), asyncio.Event()
        flooding = asyncio.create_task(flood(world, answers, stop, started))
        try:
            await started.wait()  # the refetch that tokens from outside may cause is spent by now
            published = (await before.request("GET", f"{world.idp.url}/jwks")).json()["keys"]
            new_kid = rotate_key(world.data_dir)
            assert new_kid not in {key["kid"] for key in published}

            # New logins get ID tokens signed with the new key: each is verified, none waits for a rate limit.
            for _ in range(3):
                browser = browsers()
                callback = await sign_in(browser, world)
                assert callback.status_code == 302, callback.text
                user = await browser.request("GET", f"{world.bff}/bff/user", headers=XHR)
                assert user.status_code == 200, user.text
                assert user.json()["sub"] == "alice-0001"

            # The session from before the rotation refreshes: the refreshed ID token is signed with the new key.
            first_bearer = world.api.bearers[0]
            await asyncio.sleep(max(0.0, refresh_due - time.monotonic()))
            refreshed = await before.request("GET", f"{world.bff}/api/orders", headers=XHR)
            assert refreshed.status_code == 200, refreshed.text
            assert world.api.bearers[-1] != first_bearer
        finally:
            stop.set()
            await flooding

    assert len(answers) >= 3
    for answer in answers:
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == "invalid_logout_token"
