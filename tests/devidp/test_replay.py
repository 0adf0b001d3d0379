"""The reference IdP refuses a replayed request object (RFC 9101) and a replayed ``private_key_jwt`` client assertion
(RFC 7523 3, OpenID Connect Core 9), with ``jti`` and ``exp`` required and the memory of used ``jti`` values
bounded. Over loopback against the real IdP; the cache itself under a flood at the end. bff's own logins twice
in a row are in ``tests/test_par_e2e.py``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from uuid import uuid4

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from bff_devtools.devidp import ClientRegistration
from bff_devtools.devidp.client_keys import LEEWAY, MAX_ASSERTION_LIFETIME
from bff_devtools.replay import MAX_JTI, ReplayCache, ReplayRefused
from tests.support.devidp import REDIRECT_URI, IdP, pkce_pair, running_devidp

CLIENT = "signed-client"
KEY = ECKey.generate_key("P-256", private=True)
KEY.ensure_kid()
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: Small, so a flood over HTTP reaches it.
CACHE_SIZE = 8
REMOVE = object()


@pytest.fixture
def idp(tmp_path: Path) -> Iterator[IdP]:
    registration = ClientRegistration(
        CLIENT,
        "registered-but-unused-secret-0123",  # private_key_jwt authenticates it
        redirect_uris=(REDIRECT_URI,),
        grant_types=("authorization_code", "client_credentials"),
        token_endpoint_auth_method="private_key_jwt",
        jwks={"keys": [KEY.as_dict(private=False)]},
    )
    with running_devidp(tmp_path, (registration,), jti_cache_size=CACHE_SIZE) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def signed(claims: dict[str, Any], header: dict[str, Any]) -> str:
    present = {name: value for name, value in claims.items() if value is not REMOVE}
    return jwt.encode({"alg": "ES256", "kid": KEY.kid, **header}, present, KEY)


def assertion(idp: IdP, *, exp_in: int = 60, **claims: Any) -> str:
    """A client assertion made now, valid for ``exp_in`` seconds."""
    now = int(time.time())
    body = {
        "iss": CLIENT,
        "sub": CLIENT,
        "aud": f"{idp.url}/token",
        "jti": uuid4().hex,
        "iat": now,
        "exp": now + exp_in,
    }
    return signed({**body, **claims}, {})


def request_object(idp: IdP, **claims: Any) -> str:
    now = int(time.time())
    body = {
        "iss": CLIENT, "aud": idp.url, "client_id": CLIENT, "response_type": "code", "scope": "openid",
        "redirect_uri": REDIRECT_URI, "code_challenge": pkce_pair()[1], "code_challenge_method": "S256",
        "state": uuid4().hex, "nonce": uuid4().hex, "nbf": now, "exp": now + 300, "jti": uuid4().hex,
    }  # fmt: skip
    return signed({**body, **claims}, {"typ": "oauth-authz-req+jwt"})


def client_auth(client_assertion: str) -> dict[str, str]:
    return {"client_assertion_type": JWT_BEARER, "client_assertion": client_assertion}


async def token(http: httpx.AsyncClient, idp: IdP, client_assertion: str) -> httpx.Response:
    form = {"grant_type": "client_credentials", **client_auth(client_assertion)}
    return await http.post(f"{idp.url}/token", data=form)


async def push(http: httpx.AsyncClient, idp: IdP, client_assertion: str, request: str) -> httpx.Response:
    return await http.post(f"{idp.url}/par", data={"request": request, **client_auth(client_assertion)})


def refused(answer: httpx.Response, status: int, error: str, description: str) -> None:
    """RFC 6749 5.2: the token endpoint answers invalid_client with 400 when no Authorization header was tried;
    the PAR endpoint with 401."""
    assert answer.status_code == status, answer.text
    assert answer.json()["error"] == error
    assert description in answer.json()["error_description"]


async def test_a_replayed_client_assertion_is_refused_at_the_token_and_par_endpoints(
    idp: IdP, http: httpx.AsyncClient
) -> None:
    once = assertion(idp)
    assert (await token(http, idp, once)).status_code == 200
    refused(await token(http, idp, once), 400, "invalid_client", "jti was used before")
    refused(await push(http, idp, once, request_object(idp)), 401, "invalid_client", "jti was used before")

    at_par = assertion(idp, aud=f"{idp.url}/par")
    assert (await push(http, idp, at_par, request_object(idp))).status_code == 201
    refused(await push(http, idp, at_par, request_object(idp)), 401, "invalid_client", "jti was used before")
    refused(await token(http, idp, at_par), 400, "invalid_client", "jti was used before")


async def test_a_replayed_request_object_is_refused_at_par_and_at_authorize(idp: IdP, http: httpx.AsyncClient) -> None:
    pushed = request_object(idp)
    assert (await push(http, idp, assertion(idp), pushed)).status_code == 201
    replay = await push(http, idp, assertion(idp), pushed)
    refused(replay, 400, "invalid_request_object", "request object's jti was used before")
    # The same object straight at /authorize (RFC 9101 5.1): one memory for both ways in.
    at_idp = f"{idp.url}/authorize?{urlencode({'client_id': CLIENT, 'request': pushed})}"
    page = await http.get(at_idp)
    assert (page.status_code, "invalid_request_object" in page.text) == (400, True), page.text

    direct = request_object(idp)
    at_idp = f"{idp.url}/authorize?{urlencode({'client_id': CLIENT, 'request': direct})}"
    first = await http.get(at_idp)
    assert (first.status_code, "name='tx'" in first.text) == (200, True), "the login form, once"
    again = await http.get(at_idp)
    assert (again.status_code, "used before" in again.text) == (400, True), again.text


@pytest.mark.parametrize(
    ("claims", "description"),
    [
        ({"jti": REMOVE}, "Missing JWT ID"),
        ({"jti": ""}, "needs a jti"),
        ({"jti": 7}, "jti"),
        ({"jti": "j" * (MAX_JTI + 1)}, "needs a jti"),
        ({"exp": REMOVE}, "exp"),
        ({"exp_in": MAX_ASSERTION_LIFETIME + LEEWAY + 60}, "more than 300 s ahead"),
    ],
    ids=["no-jti", "empty-jti", "number-jti", "long-jti", "no-exp", "long-lived"],
)
async def test_an_assertion_without_a_usable_jti_or_exp_is_refused(
    idp: IdP, http: httpx.AsyncClient, claims: dict[str, Any], description: str
) -> None:
    refused(await token(http, idp, assertion(idp, **claims)), 400, "invalid_client", description)


@pytest.mark.parametrize(
    ("claims", "description"),
    [({"jti": REMOVE}, "needs a jti"), ({"jti": ["a"]}, "needs a jti"), ({"jti": "j" * (MAX_JTI + 1)}, "needs a jti")],
    ids=["no-jti", "list-jti", "long-jti"],
)
async def test_a_request_object_without_a_usable_jti_is_refused(
    idp: IdP, http: httpx.AsyncClient, claims: dict[str, Any], description: str
) -> None:
    answer = await push(http, idp, assertion(idp), request_object(idp, **claims))
    refused(answer, 400, "invalid_request_object", description)


async def test_a_flood_of_unique_assertions_is_refused_beyond_the_cap_without_forgetting_a_live_jti(
    idp: IdP, http: httpx.AsyncClient
) -> None:
    accepted = [assertion(idp) for _ in range(CACHE_SIZE)]
    for each in accepted:
        assert (await token(http, idp, each)).status_code == 200
    refused(await token(http, idp, assertion(idp)), 400, "invalid_client", "too many client assertions")
    refused(await token(http, idp, accepted[0]), 400, "invalid_client", "jti was used before")


# --- the cache ---------------------------------------------------------------------------------------------------

NOW = 1_700_000_000


def cache(capacity: int = 100) -> ReplayCache:
    return ReplayCache("client assertion", max_lifetime=300, skew=30, capacity=capacity)


def test_a_flood_keeps_the_cache_at_its_capacity_and_expired_entries_make_room() -> None:
    jtis = cache(capacity=1000)
    refusals: list[str] = []
    for i in range(100_000):
        now = NOW + i // 1000  # a thousand per second, each valid for 60 s
        try:
            jtis.use("c", f"jti-{i}", now + 60, now=now)
        except ReplayRefused as exc:
            refusals.append(str(exc))
        assert len(jtis) <= 1000
    # Accepted: the first second's thousand, then a thousand once those expired (exp + skew, 90 s later).
    assert len(refusals) == 98_000, "no live entry was dropped to make room"
    assert set(refusals) == {"the server is busy: too many client assertions to remember; try again later"}
    later = NOW + 100 + 90  # every entry has passed its exp + skew
    jtis.use("c", "fresh", later + 60, now=later)
    assert len(jtis) == 1


def test_a_live_jti_is_refused_until_it_expires_and_jtis_are_per_client() -> None:
    jtis = cache()
    jtis.use("a", "j", NOW + 60, now=NOW)
    jtis.use("b", "j", NOW + 60, now=NOW)
    with pytest.raises(ReplayRefused, match="used before"):
        jtis.use("a", "j", NOW + 60, now=NOW + 89)
    with pytest.raises(ReplayRefused, match="has expired"):
        jtis.use("a", "j", NOW + 60, now=NOW + 90)
    assert len(jtis) == 2
    jtis.use("a", "other", NOW + 200, now=NOW + 90)
    assert len(jtis) == 1, "the two expired entries are gone"


@pytest.mark.parametrize(
    ("jti", "exp", "message"),
    [("j", True, "integer exp"), ("j", NOW + 60.5, "integer exp"), ("j", NOW + 331, "more than 300 s ahead"),
     (None, NOW + 60, "needs a jti")],
)  # fmt: skip
def test_the_cache_refuses_unusable_claims(jti: object, exp: object, message: str) -> None:
    jtis = cache()
    with pytest.raises(ReplayRefused, match=message):
        jtis.use("c", jti, exp, now=NOW)
    jtis.use("c", "j", NOW + 330, now=NOW)  # the cap itself, skew included, is accepted
    with pytest.raises(ValueError, match="at least 1"):
        cache(capacity=0)


def test_a_released_jti_takes_no_room_and_its_old_expiry_does_not_forget_it_used_again() -> None:
    jtis = cache(capacity=1)
    jtis.remember("k", "j", NOW + 10, now=NOW)
    jtis.release("k", "j")  # its request was refused before the jti served
    assert len(jtis) == 0
    jtis.remember("k", "j", NOW + 100, now=NOW + 1)  # room for it, and accepted again
    with pytest.raises(ReplayRefused, match="used before"):
        jtis.remember("k", "j", NOW + 100, now=NOW + 50)  # past the released entry's expiry: still remembered
    jtis.release("k", "never-seen")  # nothing to release: nothing happens
    assert len(jtis) == 1
