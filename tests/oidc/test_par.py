"""The PAR client (RFC 9126) against answers a real IdP rarely gives: every answer but a well-formed ``201`` fails the
login with a specific error, and the pushed request carries the client's authentication, the authorization
parameters and (with DPoP) a proof. The end-to-end runs against the reference IdP are in ``tests/test_par_e2e.py``."""

from __future__ import annotations

import base64
import json
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import respx
from joserfc.jwk import ECKey

from bff.config import OIDCSettings, Secret
from bff.errors import ConfigError, IdPUnavailable, PushedAuthorizationFailed
from bff.oidc.authorization import AuthorizationRequests
from bff.oidc.client_auth import ClientAuth
from bff.oidc.discovery import ProviderMetadata
from bff.oidc.dpop import DPoPProver
from bff.oidc.par import MAX_ANSWER, MAX_REQUEST_URI, PushedAuthorization
from bff.oidc.profiles import plan_authorization

ISSUER = "https://idp.example.com"
PAR = f"{ISSUER}/par"
SECRET = Secret("unit-test-client-secret-0123456789abcdef")
GOOD = {"request_uri": "urn:ietf:params:oauth:request_uri:abc", "expires_in": 60}


def metadata(**extra: Any) -> ProviderMetadata:
    return ProviderMetadata.from_json(
        {
            "issuer": ISSUER,
            "authorization_endpoint": f"{ISSUER}/authorize",
            "token_endpoint": f"{ISSUER}/token",
            "jwks_uri": f"{ISSUER}/jwks",
            "pushed_authorization_request_endpoint": PAR,
            **extra,
        },
        issuer=ISSUER,
    )


def settings(**extra: Any) -> OIDCSettings:
    return OIDCSettings(issuer=ISSUER, client_id="spa-bff", client_secret=SECRET, **extra)


def auth_for(config: OIDCSettings, meta: ProviderMetadata) -> ClientAuth:
    """The client authentication alone: planning makes no call, so the HTTP client is never opened."""
    return ClientAuth(config, meta, httpx.AsyncClient(), clock=time.time)


def requests(http: httpx.AsyncClient, dpop: DPoPProver | None = None) -> AuthorizationRequests:
    config, meta = settings(), metadata()
    auth = ClientAuth(config, meta, http, clock=time.time, dpop=dpop)
    plan = plan_authorization(config, meta, auth)
    assert plan.par_endpoint == PAR
    par = PushedAuthorization(auth, PAR, dpop=dpop is not None)
    return AuthorizationRequests(config, meta.authorization_endpoint, par=par, signer=None)


async def login_url(answer: httpx.Response | Exception, dpop: DPoPProver | None = None) -> tuple[str, httpx.Request]:
    async with httpx.AsyncClient() as http:
        with respx.mock(assert_all_called=True) as router:
            route = router.post(PAR)
            if isinstance(answer, Exception):
                route.side_effect = answer
            else:
                route.return_value = answer
            try:
                url = await requests(http, dpop).url(
                    state="S" * 43, nonce="N" * 43, code_challenge="C" * 43, redirect_uri="https://app/cb"
                )
            finally:
                sent = route.calls.last.request if route.calls else None
    assert sent is not None
    return url, sent


async def test_the_browser_carries_only_client_id_and_request_uri() -> None:
    url, sent = await login_url(httpx.Response(201, json=GOOD))
    assert dict(parse_qsl(urlsplit(url).query)) == {"client_id": "spa-bff", "request_uri": GOOD["request_uri"]}
    assert url.startswith(f"{ISSUER}/authorize?")
    form = dict(parse_qsl(sent.content.decode()))
    assert form["redirect_uri"] == "https://app/cb"
    assert (form["state"], form["code_challenge_method"], form["response_type"]) == ("S" * 43, "S256", "code")
    assert sent.headers["authorization"].startswith("Basic "), "the push is authenticated like a token request"
    assert "dpop" not in sent.headers


async def test_with_dpop_the_push_carries_a_proof_for_the_par_endpoint() -> None:
    prover = DPoPProver(ECKey.generate_key("P-256", private=True), clock=time.time)
    _, sent = await login_url(httpx.Response(201, json=GOOD), dpop=prover)
    header, claims = (json.loads(_b64(part)) for part in sent.headers["dpop"].split(".")[:2])
    assert (header["typ"], claims["htm"], claims["htu"]) == ("dpop+jwt", "POST", PAR)


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


REFUSED = [
    (httpx.Response(400, json={"error": "invalid_request"}), "invalid_request"),
    (httpx.Response(401, json={"error": "invalid_client"}), "invalid_client"),
    (httpx.Response(403, json={"error": "access_denied"}), "access_denied"),
    (httpx.Response(400, content=b"<html>no</html>"), "invalid_answer"),
    (httpx.Response(400, json={"error": "bad\ncode"}), "invalid_answer"),
    (httpx.Response(400, json=["invalid_request"]), "invalid_answer"),
]


@pytest.mark.parametrize(("answer", "code"), REFUSED)
async def test_a_refusal_names_the_oauth_error(answer: httpx.Response, code: str) -> None:
    with pytest.raises(PushedAuthorizationFailed, match="PAR endpoint: refused") as caught:
        await login_url(answer)
    assert (caught.value.oauth_error, caught.value.error, caught.value.status) == (code, "idp_par_failed", 502)


MALFORMED: list[httpx.Response] = [
    httpx.Response(200, json=GOOD),  # RFC 9126 2.2: 201
    httpx.Response(302, headers={"location": "https://elsewhere"}),
    httpx.Response(201, content=b"not json"),
    httpx.Response(201, content=b"\xff\xfe"),
    httpx.Response(201, json=[GOOD]),
    httpx.Response(201, json={"expires_in": 60}),
    httpx.Response(201, json={**GOOD, "request_uri": 7}),
    httpx.Response(201, json={**GOOD, "request_uri": ""}),
    httpx.Response(201, json={**GOOD, "request_uri": "urn:x\n"}),
    httpx.Response(201, json={**GOOD, "request_uri": "urn:x\x00y"}),
    httpx.Response(201, json={**GOOD, "request_uri": "urn:x y"}),
    httpx.Response(201, json={**GOOD, "request_uri": "urn:é"}),
    httpx.Response(201, json={**GOOD, "request_uri": "u" * (MAX_REQUEST_URI + 1)}),
    httpx.Response(201, json={"request_uri": GOOD["request_uri"]}),
    httpx.Response(201, json={**GOOD, "expires_in": 0}),
    httpx.Response(201, json={**GOOD, "expires_in": -60}),
    httpx.Response(201, json={**GOOD, "expires_in": "60"}),
    httpx.Response(201, json={**GOOD, "expires_in": True}),
    httpx.Response(201, json={**GOOD, "expires_in": 1.5}),
    httpx.Response(201, json={**GOOD, "padding": "x" * MAX_ANSWER}),
]


@pytest.mark.parametrize("answer", MALFORMED, ids=range(len(MALFORMED)))
async def test_a_malformed_answer_fails_the_login(answer: httpx.Response) -> None:
    with pytest.raises(PushedAuthorizationFailed) as caught:
        await login_url(answer)
    assert caught.value.error == "idp_par_failed"
    assert "abc" not in caught.value.message, "nothing of the answer is echoed"


async def test_the_longest_request_uri_is_accepted() -> None:
    uri = "u" * MAX_REQUEST_URI
    url, _ = await login_url(httpx.Response(201, json={**GOOD, "request_uri": uri}))
    assert dict(parse_qsl(urlsplit(url).query))["request_uri"] == uri


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(500),
        httpx.Response(503, json={"error": "temporarily_unavailable"}),
        httpx.Response(429),
        httpx.ReadTimeout("slow"),
        httpx.ConnectError("refused"),
    ],
    ids=["500", "503", "429", "timeout", "refused"],
)
async def test_an_idp_that_is_down_is_unavailable(answer: httpx.Response | Exception) -> None:
    with pytest.raises(IdPUnavailable) as caught:
        await login_url(answer)
    assert caught.value.status == 503


def test_par_required_refuses_an_idp_without_the_endpoint() -> None:
    config, meta = settings(par="required"), metadata(pushed_authorization_request_endpoint=None)
    with pytest.raises(ConfigError, match="no pushed_authorization_request_endpoint"):
        plan_authorization(config, meta, auth_for(config, meta))


@pytest.mark.parametrize(
    ("par", "endpoint", "required", "expected"),
    [
        ("auto", PAR, False, PAR),
        ("auto", None, False, None),
        ("off", PAR, False, None),
        ("required", PAR, False, PAR),
        ("auto", PAR, True, PAR),
    ],
)
def test_when_par_is_used(par: str, endpoint: str | None, required: bool, expected: str | None) -> None:
    config = settings(par=par)
    meta = metadata(pushed_authorization_request_endpoint=endpoint, require_pushed_authorization_requests=required)
    assert plan_authorization(config, meta, auth_for(config, meta)).par_endpoint == expected


@pytest.mark.parametrize("endpoint", [None, PAR])
def test_par_off_refuses_an_idp_that_requires_it(endpoint: str | None) -> None:
    config = settings(par="off")
    meta = metadata(pushed_authorization_request_endpoint=endpoint, require_pushed_authorization_requests=True)
    with pytest.raises(ConfigError, match="require_pushed_authorization_requests"):
        plan_authorization(config, meta, auth_for(config, meta))


def test_an_insecure_par_endpoint_makes_the_metadata_unusable() -> None:
    from bff.errors import InvalidProviderMetadata

    with pytest.raises(InvalidProviderMetadata, match="pushed_authorization_request_endpoint must be an https URL"):
        metadata(pushed_authorization_request_endpoint="http://idp.example.com/par")
