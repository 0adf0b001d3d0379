"""bff against two independent OpenID Providers: the reference IdP of ``devtools/`` and panva's oidc-provider, an
OpenID Certified provider written by others (npm, pinned in ``tests/interop/oidc_provider``). Every test runs
against both (the ``op`` fixture); all real servers on loopback: bff (sessions in the suite's Redis), the provider
and an API that accepts only the provider's RFC 9068 access tokens, verified with its JWKS alone.

Login (the provider's own pages, scripted over HTTP), a proxied call, refresh (proactive after expiry, a storm of
parallel requests costing the provider one rotation; reactive after an upstream 401), the provider's
refresh-token reuse detection, RP-initiated logout (revocation and end-session reach the provider) and
back-channel logout (the provider's logout token ends bff's session).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bff.app import BffApp
from bff.types import system_clock
from bff_devtools.dpop_proofs import InvalidProof, ProofVerifier
from tests.support.browser import Browser
from tests.support.interop_op import OP, Registration
from tests.support.servers import serve
from tests.support.sessions import expire_in_store
from tests.support.stack import serving_bff

XHR = {"X-CSRF": "1"}
INVALID_TOKEN = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class JwtApi:
    """An API that accepts a bearer token only if it is the provider's RFC 9068 access token for this API (JWKS
    alone: signature, ``typ``, ``iss``, ``aud``, ``exp``), and not one it was told to reject; answers the claims.
    The provider is looked up per request: the reference IdP starts when bff registers."""

    def __init__(self, op: OP) -> None:
        self.op = op
        self.rejected: set[str] = set()  #: ``jti``s refused as if revoked
        self.seen: list[str] = []  #: the ``jti`` of every request
        self.url = ""
        self.keys: KeySet | None = None
        self.proofs = ProofVerifier(clock=system_clock)
        self.app = Starlette(routes=[Route("/{path:path}", self.handle, methods=["GET", "POST"])])

    async def handle(self, request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if self.keys is None:  # neither provider rotates its keys during a test
            async with httpx.AsyncClient() as http:
                self.keys = KeySet.import_key_set((await http.get(self.op.metadata()["jwks_uri"])).json())
        try:
            decoded = jwt.decode(token, self.keys, algorithms=["ES256", "RS256"])
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": self.op.issuer},
                aud={"essential": True, "value": self.op.audience},
                exp={"essential": True},
                jti={"essential": True},
            ).validate(decoded.claims)
        except (JoseError, ValueError):
            return Response(status_code=401, headers=INVALID_TOKEN)
        self.seen.append(decoded.claims["jti"])
        if decoded.header.get("typ") != "at+jwt" or decoded.claims["jti"] in self.rejected:
            return Response(status_code=401, headers=INVALID_TOKEN)
        # RFC 9449 7.1: a token bound to a key (cnf.jkt) goes with the DPoP scheme and a proof signed by that key.
        bound = decoded.claims.get("cnf", {}).get("jkt")
        if scheme == "DPoP":
            try:
                proven = self.proofs.verify(
                    request.headers.get("dpop", ""), method=request.method, url=str(request.url), access_token=token
                )
            except InvalidProof:
                return Response(status_code=401, headers={"WWW-Authenticate": 'DPoP error="invalid_dpop_proof"'})
            if bound is None or proven != bound:
                return Response(status_code=401, headers={"WWW-Authenticate": 'DPoP error="invalid_token"'})
        elif scheme != "Bearer" or bound is not None:
            return Response(status_code=401, headers=INVALID_TOKEN)
        return JSONResponse({**decoded.claims, "scheme": scheme})


@dataclass
class Bff:
    app: BffApp
    url: str
    client: Registration

    def cookie(self, browser: Browser) -> str:
        return browser.cookies(self.url)["__Host-bff"]


@pytest.fixture
def api(op: OP) -> Iterator[JwtApi]:
    upstream = JwtApi(op)
    with serve(upstream.app) as upstream.url:
        yield upstream


@contextlib.contextmanager
def serving_bff_for(op: OP, api: JwtApi, redis_url: str, **oidc: Any) -> Iterator[Bff]:
    """bff with a client registered at ``op`` and one route, ``/api``, to ``api``; ``oidc``: more ``[oidc]`` keys."""
    registered: list[Registration] = []

    def configure(doc: dict[str, Any]) -> None:
        registered.append(op.register(doc["server"]["public_origin"]))
        doc["oidc"].update(
            issuer=op.issuer,
            client_id=registered[0].client_id,
            client_secret=registered[0].client_secret,
            **op.oidc_settings,
            **oidc,
        )
        doc["routes"] = [{"path": "/api", "upstream": api.url, "token": "user"}]

    with serving_bff("http://127.0.0.1", redis_url=redis_url, customize=configure) as (app, url):
        yield Bff(app, url, registered[0])


@pytest.fixture
def bff(op: OP, api: JwtApi, redis_url: str) -> Iterator[Bff]:
    with serving_bff_for(op, api, redis_url) as running:
        yield running


async def signed_in(op: OP, bff: Bff, browser: Browser) -> dict[str, Any]:
    """Sign in through the provider's pages; returns ``/bff/user``."""
    hops = await op.sign_in(browser, bff.url)
    assert op.showed_login_form(hops), [(h.status_code, str(h.url)) for h in hops]
    user = await browser.request("GET", f"{bff.url}/bff/user", headers=XHR)
    assert user.status_code == 200, [(h.status_code, str(h.url), h.text[:300]) for h in hops]
    body: dict[str, Any] = user.json()
    return body


async def api_call(bff: Bff, browser: Browser, method: str = "GET") -> httpx.Response:
    return await browser.request(method, f"{bff.url}/api/me", headers=XHR, content=b"{}" if method == "POST" else None)


async def test_login_and_a_proxied_call_with_the_providers_access_token(
    op: OP, bff: Bff, browser: Browser, api: JwtApi
) -> None:
    user = await signed_in(op, bff, browser)
    assert (user["sub"], user["name"]) == op.user

    response = await api_call(bff, browser)
    assert response.status_code == 200, response.text
    claims = response.json()
    assert (claims["sub"], claims["client_id"]) == (op.user[0], bff.client.client_id)
    assert await op.refreshes(bff.client) == 0


async def test_the_login_is_pushed_to_the_providers_par_endpoint(op: OP, bff: Bff, browser: Browser) -> None:
    """Both providers offer PAR (RFC 9126; oidc-provider by default): bff pushes the request, and the browser reaches
    the provider with ``client_id`` and the ``request_uri`` it answered, nothing else."""
    assert op.metadata().get("pushed_authorization_request_endpoint")
    hops = await op.sign_in(browser, bff.url)
    to_provider = urlsplit(hops[0].headers["location"])
    assert set(dict(parse_qsl(to_provider.query))) == {"client_id", "request_uri"}, to_provider.query
    user = await browser.request("GET", f"{bff.url}/bff/user", headers=XHR)
    assert user.status_code == 200, user.text


async def test_a_storm_on_an_expired_token_costs_the_provider_one_rotation(
    op: OP, bff: Bff, browser: Browser, api: JwtApi, redis_url: str
) -> None:
    await signed_in(op, bff, browser)
    first = (await api_call(bff, browser)).json()["jti"]
    await expire_in_store(bff.app, redis_url, bff.cookie(browser))

    responses = await asyncio.gather(*(api_call(bff, browser) for _ in range(20)))

    assert [r.status_code for r in responses] == [200] * 20
    tokens = {r.json()["jti"] for r in responses}
    assert len(tokens) == 1
    assert first not in tokens
    assert await op.refreshes(bff.client) == 1
    assert not await op.reuse_detected(bff.client)  # the spent refresh token was never presented again


async def test_an_upstream_401_refreshes_once_and_replays(op: OP, bff: Bff, browser: Browser, api: JwtApi) -> None:
    await signed_in(op, bff, browser)
    first = (await api_call(bff, browser)).json()["jti"]
    api.rejected.add(first)

    response = await api_call(bff, browser, "POST")

    assert response.status_code == 200, response.text
    assert response.json()["jti"] != first
    assert api.seen[-2:] == [first, response.json()["jti"]]
    assert await op.refreshes(bff.client) == 1


async def test_a_replayed_refresh_token_revokes_the_grant_and_ends_the_session(
    op: OP, bff: Bff, browser: Browser, api: JwtApi, redis_url: str
) -> None:
    await signed_in(op, bff, browser)
    stolen = (await expire_in_store(bff.app, redis_url, bff.cookie(browser))).session.tokens.refresh_token
    assert stolen is not None
    assert (await api_call(bff, browser)).status_code == 200  # bff rotated it

    async with httpx.AsyncClient() as http:  # a thief presents the spent token: reuse detection
        replay = await http.post(
            op.metadata()["token_endpoint"],
            data={"grant_type": "refresh_token", "refresh_token": stolen},
            auth=(bff.client.client_id, bff.client.client_secret),
        )
    assert (replay.status_code, replay.json()["error"]) == (400, "invalid_grant")
    assert await op.reuse_detected(bff.client)

    if not op.logs_out_on_reuse:  # then bff learns of it at its next refresh, which the provider refuses
        await expire_in_store(bff.app, redis_url, bff.cookie(browser))
        response = await api_call(bff, browser)
        assert response.status_code == 401
        assert response.json()["error"] == "session_expired"
    assert (await browser.request("GET", f"{bff.url}/bff/user", headers=XHR)).status_code == 401
    assert (await api_call(bff, browser)).status_code == 401


async def test_rp_initiated_logout_revokes_and_ends_the_providers_session(
    op: OP, bff: Bff, browser: Browser, redis_url: str
) -> None:
    user = await signed_in(op, bff, browser)
    refresh_token = (await expire_in_store(bff.app, redis_url, bff.cookie(browser))).session.tokens.refresh_token
    assert refresh_token is not None
    assert not await op.revoked(bff.client, refresh_token)

    hops = await browser.follow(bff.url + user["logout_url"])
    end_session = next(h for h in hops if str(h.url).startswith(op.metadata()["end_session_endpoint"]))
    assert "id_token_hint=" in str(end_session.url)
    assert await op.revoked(bff.client, refresh_token)  # RFC 7009 revocation reached it

    hops = await op.confirm_logout(browser, hops)
    assert str(hops[-1].url) == f"{bff.url}/"  # the registered post_logout_redirect_uri
    assert (await browser.request("GET", f"{bff.url}/bff/user", headers=XHR)).status_code == 401
    again = await op.sign_in(browser, bff.url)
    assert op.showed_login_form(again), "the provider's session is gone: its login form again"


async def test_back_channel_logout_from_the_provider_ends_the_session(op: OP, bff: Bff, browser: Browser) -> None:
    await signed_in(op, bff, browser)
    assert (await browser.request("GET", f"{bff.url}/bff/user", headers=XHR)).status_code == 200

    await op.log_out_at_the_provider(browser)  # another application's logout, say: bff is not involved

    assert (await browser.request("GET", f"{bff.url}/bff/user", headers=XHR)).status_code == 401
    assert (await api_call(bff, browser)).status_code == 401


async def test_dpop_bound_tokens_with_the_providers_nonces(
    op: OP, browser: Browser, api: JwtApi, redis_url: str, tmp_path: Path
) -> None:
    key = ECKey.generate_key("P-256", private=True)
    (tmp_path / "dpop.pem").write_bytes(key.as_pem(private=True))
    with serving_bff_for(op, api, redis_url, dpop=True, dpop_key_file=str(tmp_path / "dpop.pem")) as dpop_bff:
        await signed_in(op, dpop_bff, browser)
        first = await api_call(dpop_bff, browser)
        assert first.status_code == 200, first.text
        assert (first.json()["scheme"], first.json()["cnf"]["jkt"]) == ("DPoP", key.thumbprint())

        await expire_in_store(dpop_bff.app, redis_url, dpop_bff.cookie(browser))
        refreshed = await api_call(dpop_bff, browser)
        assert refreshed.status_code == 200, refreshed.text
        assert refreshed.json()["jti"] != first.json()["jti"]
        assert refreshed.json()["cnf"]["jkt"] == key.thumbprint()  # the refreshed token is bound to the same key
        assert await op.refreshes(dpop_bff.client) == 1
