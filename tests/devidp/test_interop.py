"""bff against the development IdP, all real servers on loopback: two bff instances (two registered clients) in one
browser, an API that trusts only the IdP's JWKS and blocklist, and the IdP.

One story, in order: sign in to bff A through the IdP's login form; ``/bff/user``; an API call; the 2-second access
token is refreshed by bff (``refresh_leeway = 1s``) and the IdP rotates the family; sign in to bff B without a form
(single sign-on); log out of A, which revokes A's refresh token (RFC 7009) and sends the browser to
``/end_session``; the IdP ends its session and sends back-channel logout to both clients, which ends B's session too
(single logout); signing in again needs the password.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bff.app import BffApp
from bff.session.memory_store import MemoryStore
from bff_devtools.devidp import ClientRegistration
from tests.support.browser import Browser
from tests.support.configs import base_document, make_config
from tests.support.devidp import IdP, running_devidp, sign_in_through_form
from tests.support.servers import serve
from tests.support.stack import bound_socket

XHR = {"X-CSRF": "1"}
SECRETS = {"a": "bff-a-client-secret-0123456789", "b": "bff-b-client-secret-0123456789"}


class DemoApi:
    """An API that accepts an access token only if the IdP signed it (JWKS alone), for this API, unexpired and not
    on the IdP's blocklist; it answers with the token's claims."""

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer
        self.app = Starlette(routes=[Route("/{path:path}", self.handle)])

    async def handle(self, request: Request) -> Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        async with httpx.AsyncClient() as http:
            jwks = KeySet.import_key_set((await http.get(f"{self.issuer}/jwks")).json())
            revoked = (await http.get(f"{self.issuer}/blocklist")).json()["revoked_jtis"]
        try:
            decoded = jwt.decode(token, jwks, algorithms=["ES256"])
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": self.issuer}, aud={"essential": True, "value": "demo-api"}
            ).validate(decoded.claims)
        except (JoseError, ValueError):
            return Response(status_code=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if decoded.header.get("typ") != "at+jwt" or decoded.claims["jti"] in revoked:
            return Response(status_code=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return JSONResponse(decoded.claims)


@dataclass(frozen=True)
class World:
    idp: IdP
    bff: dict[str, str]


def bff_app(origin: str, idp_url: str, name: str, api_url: str) -> BffApp:
    doc = base_document(public_origin=origin, issuer=idp_url)
    doc["oidc"].update(client_id=f"bff-{name}", client_secret=SECRETS[name])
    doc["routes"] = [{"path": "/api", "upstream": api_url, "token": "user"}]
    doc["tokens"] = {"refresh_leeway": "1s"}
    return BffApp(make_config(doc), store=MemoryStore())


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    sockets = {name: bound_socket() for name in SECRETS}
    origins = {name: f"http://127.0.0.1:{sock.getsockname()[1]}" for name, sock in sockets.items()}
    clients = tuple(
        ClientRegistration(
            f"bff-{name}",
            SECRETS[name],
            redirect_uris=(f"{origin}/bff/callback",),
            post_logout_redirect_uris=(f"{origin}/",),
            backchannel_logout_uri=f"{origin}/bff/backchannel-logout",
        )
        for name, origin in origins.items()
    )
    with contextlib.ExitStack() as stack:
        idp = stack.enter_context(running_devidp(tmp_path, clients, access_token_ttl=2))
        api_url = stack.enter_context(serve(DemoApi(idp.url).app))
        urls = {
            name: stack.enter_context(serve(bff_app(origins[name], idp.url, name, api_url), sock=sockets[name]))
            for name in SECRETS
        }
        yield World(idp, urls)


async def families(browser: Browser, idp: IdP) -> dict[str, dict[str, object]]:
    """alice's token families by client, from the IdP's admin API (with her IdP session in ``browser``)."""
    response = await browser.request("GET", f"{idp.url}/admin/api/users/alice/families")
    assert response.status_code == 200, response.text
    return {str(f["client_id"]): f for f in response.json()["families"]}


async def test_bff_signs_in_refreshes_and_logs_out_against_the_devidp(world: World, browser: Browser) -> None:
    a, b = world.bff["a"], world.bff["b"]

    # 1. Sign in to A through the IdP's login form; bff validates the ID token, the iss parameter, PKCE...
    hops = await sign_in_through_form(browser, a)
    assert any("name='tx'" in hop.text for hop in hops), "the IdP showed its login form"
    user = await browser.request("GET", f"{a}/bff/user", headers=XHR)
    assert user.status_code == 200, user.text
    assert (user.json()["sub"], user.json()["name"], user.json()["role"]) == ("alice-0001", "Alice Example", "admin")

    # 2. An API call carries the IdP's access token, which the API verifies with the JWKS alone.
    first = await browser.request("GET", f"{a}/api/me", headers=XHR)
    assert first.status_code == 200, first.text
    assert (first.json()["sub"], first.json()["client_id"]) == ("alice-0001", "bff-a")

    # 3. Within a second of expiry (leeway 1s of a 2s token), bff refreshes; the IdP rotates the family.
    await asyncio.sleep(1.2)
    second = await browser.request("GET", f"{a}/api/me", headers=XHR)
    assert second.status_code == 200, second.text
    assert second.json()["jti"] != first.json()["jti"]
    family_a = (await families(browser, world.idp))["bff-a"]
    assert family_a["state"] == "active"
    assert int(str(family_a["rotations"])) >= 1

    # 4. Single sign-on: B signs in without a form, in the same IdP session.
    hops = await sign_in_through_form(browser, b)
    assert not any("name='tx'" in hop.text for hop in hops)
    assert (await browser.request("GET", f"{b}/bff/user", headers=XHR)).status_code == 200

    # 5. Log out of A: bff revokes its refresh token and sends the browser to /end_session with its ID token.
    logout_url = (await browser.request("GET", f"{a}/bff/user", headers=XHR)).json()["logout_url"]
    hops = await browser.follow(a + logout_url)
    end_session = hops[1]
    assert str(end_session.url).startswith(f"{world.idp.url}/end_session?")
    assert end_session.status_code == 302
    assert end_session.headers["location"] == f"{a}/"  # a registered post_logout_redirect_uri

    # 6. Single logout: the back-channel logout ended B's session as well.
    assert (await browser.request("GET", f"{a}/bff/user", headers=XHR)).status_code == 401
    assert (await browser.request("GET", f"{b}/bff/user", headers=XHR)).status_code == 401

    # 7. The IdP session is gone: signing in needs the password again; the old families are revoked.
    hops = await sign_in_through_form(browser, a)
    assert any("name='tx'" in hop.text for hop in hops)
    after = await browser.request("GET", f"{world.idp.url}/admin/api/users/alice/families")
    states = sorted((f["client_id"], f["state"], f["revoked_reason"]) for f in after.json()["families"])
    assert states == [
        ("bff-a", "active", None),
        ("bff-a", "revoked", "revoked_by_client"),
        ("bff-b", "revoked", "logout"),
    ]
