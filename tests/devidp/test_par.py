"""The reference IdP's pushed authorization requests (RFC 9126) and signed request objects (RFC 9101), against
pushes and objects a careless or hostile client sends. The runs with bff are in ``tests/test_par_e2e.py``."""

from __future__ import annotations

import base64
import json
import time
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from bff_devtools.devidp import ClientRegistration
from bff_devtools.devidp.client_keys import InvalidRequestObject, request_object_replay_cache, verify_request_object
from tests.support.devidp import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, IdP, OAuthClient, query_of

BASIC = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
WRONG_SECRET = "Basic " + base64.b64encode(f"{CLIENT_ID}:wrong-secret-0123456789".encode()).decode()


def pushed_params(oauth: OAuthClient, **override: str) -> tuple[dict[str, str], str]:
    url, verifier, _, _ = oauth.authorize_url(**override)
    return query_of(url), verifier


async def push(oauth: OAuthClient, form: Any, *, headers: dict[str, str] | None = None) -> httpx.Response:
    headers = {"Authorization": BASIC, **(headers or {})}
    if isinstance(form, bytes):
        headers.setdefault("content-type", "application/x-www-form-urlencoded")
        return await oauth.http.post(f"{oauth.idp.url}/par", content=form, headers=headers)
    return await oauth.http.post(f"{oauth.idp.url}/par", data=form, headers=headers)


async def test_a_pushed_request_logs_in_and_its_request_uri_works_once(oauth: OAuthClient, idp: IdP) -> None:
    params, verifier = pushed_params(oauth)
    answer = await push(oauth, params)
    assert answer.status_code == 201, answer.text
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["expires_in"] == 60
    assert body["request_uri"].startswith("urn:ietf:params:oauth:request_uri:")
    at_idp = f"{idp.url}/authorize?{urlencode({'client_id': CLIENT_ID, 'request_uri': body['request_uri']})}"
    page = await oauth.browser.request("GET", at_idp)
    assert page.status_code == 200, page.text
    redirect = await oauth.submit_login(page, "alice", "wonderland")
    sent = query_of(redirect.headers["location"])
    assert (sent["state"], sent["iss"]) == (params["state"], idp.url)
    token = await oauth.token(
        {
            "grant_type": "authorization_code",
            "code": sent["code"],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        }
    )
    assert token.status_code == 200, token.text
    again = await oauth.browser.request("GET", at_idp)
    assert again.status_code == 400
    assert "invalid_request_uri" in again.text
    other = at_idp.replace(f"client_id={CLIENT_ID}", "client_id=another")
    assert (await oauth.browser.request("GET", other)).status_code == 400


async def test_a_request_uri_is_only_for_the_client_that_pushed_it(oauth: OAuthClient, idp: IdP) -> None:
    params, _ = pushed_params(oauth)
    request_uri = (await push(oauth, params)).json()["request_uri"]
    stolen = await oauth.browser.request(
        "GET", f"{idp.url}/authorize?{urlencode({'client_id': 'another', 'request_uri': request_uri})}"
    )
    assert stolen.status_code == 400
    assert "pushed by another client" in stolen.text


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        ({"headers": {"Authorization": WRONG_SECRET}}, 401, "invalid_client"),
        ({"headers": {"Authorization": ""}}, 401, "invalid_client"),
        ({"params": {"request_uri": "urn:ietf:params:oauth:request_uri:x"}}, 400, "invalid_request"),
        ({"params": {"client_id": "another"}}, 400, "invalid_request"),
        ({"params": {"redirect_uri": "https://evil.example/cb"}}, 400, "invalid_request"),
        ({"params": {"response_type": "token"}}, 400, "unsupported_response_type"),
        ({"params": {"request": "not.a.jwt"}}, 400, "invalid_request_object"),
        ({"raw": b"scope=openid&scope=openid"}, 400, "invalid_request"),
        ({"headers": {"content-type": "application/json"}, "raw": b"{}"}, 400, "invalid_request"),
        ({"headers": {"DPoP": "not-a-proof"}}, 400, "invalid_dpop_proof"),
    ],
    ids=["wrong-secret", "no-auth", "nested-request-uri", "other-client", "redirect", "implicit", "bad-object",
         "repeated", "json", "bad-dpop"],
)  # fmt: skip
async def test_a_bad_push_is_refused(oauth: OAuthClient, change: dict[str, Any], status: int, error: str) -> None:
    params, _ = pushed_params(oauth, **change.get("params", {}))
    answer = await push(oauth, change.get("raw", params), headers=change.get("headers"))
    assert answer.status_code == status, answer.text
    assert answer.json()["error"] == error


async def test_an_idp_without_par_has_no_endpoint(tmp_path: Any) -> None:
    from tests.support.devidp import client, running_devidp

    with running_devidp(tmp_path, (client(),), par=False) as idp:
        async with httpx.AsyncClient() as http:
            metadata = (await http.get(f"{idp.url}/.well-known/openid-configuration")).json()
            assert "pushed_authorization_request_endpoint" not in metadata
            assert (await http.post(f"{idp.url}/par", data={})).status_code in (404, 405)


# --- request objects ---------------------------------------------------------------------------------------------

ISSUER = "https://idp.example.com"
KEY = ECKey.generate_key("P-256", private=True)
KEY.ensure_kid()
REGISTRATION = ClientRegistration(
    CLIENT_ID, CLIENT_SECRET, redirect_uris=(REDIRECT_URI,), jwks={"keys": [KEY.as_dict(private=False)]}
)
NOW = 1_700_000_000


def request_object(
    claims: dict[str, Any] | None = None, *, header: dict[str, Any] | None = None, key: Any = KEY, drop: str = ""
) -> str:
    body = {
        "iss": CLIENT_ID,
        "aud": ISSUER,
        "client_id": CLIENT_ID,
        "response_type": "code",
        "scope": "openid",
        "max_age": 60,
        "nbf": NOW,
        "exp": NOW + 300,
        "jti": "j",
        **(claims or {}),
    }
    body.pop(drop, None)
    return jwt.encode({"alg": "ES256", "typ": "oauth-authz-req+jwt", **(header or {})}, body, key)


def test_a_good_request_object_gives_its_parameters_once() -> None:
    replay = request_object_replay_cache(10)
    token = request_object()
    params = dict(verify_request_object(token, REGISTRATION, issuer=ISSUER, now=NOW + 10, replay=replay))
    assert params == {"client_id": CLIENT_ID, "response_type": "code", "scope": "openid", "max_age": "60"}
    with pytest.raises(InvalidRequestObject, match="jti was used before"):
        verify_request_object(token, REGISTRATION, issuer=ISSUER, now=NOW + 20, replay=replay)


def _unsigned() -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'oauth-authz-req+jwt'})}.{part({'iss': CLIENT_ID, 'aud': ISSUER})}."


@pytest.mark.parametrize(
    "token",
    [
        request_object(key=ECKey.generate_key("P-256", private=True)),
        request_object(header={"typ": "JWT"}),
        request_object(claims={"aud": "https://other.example.com"}),
        request_object(claims={"iss": "another"}),
        request_object(claims={"client_id": "another"}),
        request_object(claims={"exp": NOW - 60}),
        request_object(claims={"nbf": NOW + 600}),
        request_object(claims={"exp": NOW + 7200}),
        request_object(drop="exp"),
        request_object(drop="nbf"),
        request_object(claims={"exp": True}),
        request_object(drop="jti"),
        request_object(claims={"request_uri": "urn:x"}),
        request_object(claims={"claims": {"userinfo": {}}}),
        request_object(claims={"pad": "x" * 20_000}),
        _unsigned(),
        "a.b",
    ],
    ids=["other-key", "typ", "aud", "iss", "client_id", "expired", "not-yet", "too-long-lived", "no-exp", "no-nbf",
         "bool-exp", "no-jti", "nested", "object-claim", "huge", "alg-none", "not-jwt"],
)  # fmt: skip
def test_a_bad_request_object_is_refused(token: str) -> None:
    with pytest.raises(InvalidRequestObject):
        verify_request_object(token, REGISTRATION, issuer=ISSUER, now=NOW + 10, replay=request_object_replay_cache(1))


def test_a_client_without_keys_cannot_send_request_objects() -> None:
    bare = ClientRegistration(CLIENT_ID, CLIENT_SECRET, redirect_uris=(REDIRECT_URI,))
    with pytest.raises(InvalidRequestObject, match="no registered keys"):
        verify_request_object(
            request_object(), bare, issuer=ISSUER, now=time.time(), replay=request_object_replay_cache(1)
        )
