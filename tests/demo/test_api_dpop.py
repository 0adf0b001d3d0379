"""The demo API's DPoP checks (RFC 9449 7), against a real reference IdP issuing a DPoP-bound token (``cnf.jkt``):
every bad proof is a 401 with a DPoP challenge and the endpoint never runs."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from joserfc import jws
from joserfc.jwk import ECKey, OctKey, RSAKey

from bff.oidc.dpop import DPoPProver, access_token_hash
from bff.types import system_clock
from bff_devtools.demo.api import DemoApiSettings, create_demo_api
from tests.support.devidp import CLIENT_ID, CLIENT_SECRET, running_devidp
from tests.support.servers import serve


@dataclass(frozen=True)
class World:
    idp: str
    api: str
    prover: DPoPProver
    token: str


def bound_token(idp: str, prover: DPoPProver) -> tuple[str, dict[str, object]]:
    url = f"{idp}/token"
    answer = httpx.post(
        url,
        data={"grant_type": "client_credentials"},
        auth=(CLIENT_ID, CLIENT_SECRET),
        headers={"DPoP": prover.proof("POST", url)},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return body["access_token"], body


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    prover = DPoPProver(ECKey.generate_key("P-256", private=True), clock=system_clock)
    with running_devidp(tmp_path) as idp, serve(create_demo_api(DemoApiSettings(issuer=idp.url))) as api:
        token, _ = bound_token(idp.url, prover)
        yield World(idp.url, api, prover, token)


def call(world: World, *, proof: str | None, scheme: str = "DPoP", path: str = "/items") -> httpx.Response:
    headers = {"Authorization": f"{scheme} {world.token}"}
    if proof is not None:
        headers["DPoP"] = proof
    return httpx.get(world.api + path, headers=headers)


def unsigned_proof(header: dict[str, object], claims: dict[str, object], key: ECKey) -> str:
    return jws.serialize_compact(header, json.dumps(claims), key, algorithms=["ES256"])


def test_the_idp_binds_the_token_to_the_proof_key(tmp_path: Path) -> None:
    prover = DPoPProver(ECKey.generate_key("P-256", private=True), clock=system_clock)
    with running_devidp(tmp_path) as idp:
        token, body = bound_token(idp.url, prover)
    assert body["token_type"] == "DPoP"
    payload = json.loads(jws.extract_compact(token.encode()).payload)
    assert payload["cnf"] == {"jkt": prover.jkt}


def test_a_valid_proof_is_served(world: World) -> None:
    response = call(world, proof=world.prover.proof("GET", world.api + "/items", access_token=world.token))
    assert response.status_code == 200, response.text


def test_the_url_query_is_not_part_of_htu(world: World) -> None:
    proof = world.prover.proof("GET", world.api + "/items", access_token=world.token)
    response = httpx.get(world.api + "/items?x=1", headers={"Authorization": f"DPoP {world.token}", "DPoP": proof})
    assert response.status_code == 200, response.text


def refused(response: httpx.Response, error: str = "invalid_dpop_proof") -> str:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("DPoP ")
    assert response.json()["error"] == error
    description: str = response.json()["error_description"]
    return description


def test_a_wrong_ath_is_refused(world: World) -> None:
    proof = world.prover.proof("GET", world.api + "/items", access_token="another-token")
    assert "ath" in refused(call(world, proof=proof))


def test_a_proof_for_another_url_is_refused(world: World) -> None:
    proof = world.prover.proof("GET", world.api + "/me", access_token=world.token)
    assert "htu" in refused(call(world, proof=proof))


def test_a_proof_for_another_method_is_refused(world: World) -> None:
    proof = world.prover.proof("POST", world.api + "/items", access_token=world.token)
    assert "htm" in refused(call(world, proof=proof))


def test_a_replayed_proof_is_refused(world: World) -> None:
    proof = world.prover.proof("GET", world.api + "/items", access_token=world.token)
    assert call(world, proof=proof).status_code == 200
    assert "jti" in refused(call(world, proof=proof))


def test_a_proof_signed_by_another_key_is_refused(world: World) -> None:
    other = DPoPProver(ECKey.generate_key("P-256", private=True), clock=system_clock)
    proof = other.proof("GET", world.api + "/items", access_token=world.token)
    assert "cnf.jkt" in refused(call(world, proof=proof))


def test_a_missing_proof_is_refused(world: World) -> None:
    refused(call(world, proof=None))


def test_a_bound_token_sent_as_bearer_is_refused(world: World) -> None:
    response = call(world, proof=None, scheme="Bearer")
    assert response.status_code == 401
    assert "DPoP-bound" in response.json()["error_description"]


def test_hostile_proof_headers_are_refused(world: World) -> None:
    key = ECKey.generate_key("P-256", private=True)
    now = int(system_clock())
    claims = {"jti": "j1", "htm": "GET", "htu": world.api + "/items", "iat": now,
              "ath": access_token_hash(world.token)}  # fmt: skip
    public = key.as_dict(private=False)
    cases: dict[str, dict[str, object]] = {
        "private key in jwk": {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=True)},
        "wrong typ": {"typ": "JWT", "alg": "ES256", "jwk": public},
        "no jwk": {"typ": "dpop+jwt", "alg": "ES256"},
    }
    for what, header in cases.items():
        proof = unsigned_proof(header, {**claims, "jti": what}, key)
        assert call(world, proof=proof).status_code == 401, what
    stale = unsigned_proof({"typ": "dpop+jwt", "alg": "ES256", "jwk": public}, {**claims, "iat": now - 3600}, key)
    assert "iat" in refused(call(world, proof=stale))
    none_alg = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6Im5vbmUifQ.eyJqdGkiOiJ4In0."
    assert call(world, proof=none_alg).status_code == 401


def test_the_api_demands_its_nonce_when_configured(tmp_path: Path) -> None:
    prover = DPoPProver(ECKey.generate_key("P-256", private=True), clock=system_clock)
    with running_devidp(tmp_path) as idp, serve(create_demo_api(DemoApiSettings(idp.url, dpop_nonce=True))) as api:
        token, _ = bound_token(idp.url, prover)
        world = World(idp.url, api, prover, token)
        first = call(world, proof=prover.proof("GET", api + "/items", access_token=token))
        refused(first, "use_dpop_nonce")
        prover.remember_nonce(api, first.headers["dpop-nonce"])
        again = call(world, proof=prover.proof("GET", api + "/items", access_token=token))
        assert again.status_code == 200, again.text


def test_an_api_that_requires_dpop_refuses_bearer_tokens(tmp_path: Path) -> None:
    with running_devidp(tmp_path) as idp, serve(create_demo_api(DemoApiSettings(idp.url, dpop_required=True))) as api:
        answer = httpx.post(
            f"{idp.url}/token", data={"grant_type": "client_credentials"}, auth=(CLIENT_ID, CLIENT_SECRET)
        )
        assert answer.json()["token_type"] == "Bearer"
        response = httpx.get(api + "/items", headers={"Authorization": "Bearer " + answer.json()["access_token"]})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("DPoP ")


def rsa_proof(key: RSAKey, method: str, url: str, *, access_token: str | None = None) -> str:
    claims: dict[str, object] = {"jti": secrets.token_urlsafe(8), "htm": method, "htu": url, "iat": int(time.time())}
    if access_token is not None:
        claims["ath"] = access_token_hash(access_token)
    header = {"typ": "dpop+jwt", "alg": "RS256", "jwk": key.as_dict(private=False)}
    return jws.serialize_compact(header, json.dumps(claims), key, algorithms=["RS256"])


def test_rs256_proofs_are_accepted_and_hmac_never(tmp_path: Path) -> None:
    key = RSAKey.generate_key(2048, private=True)
    with running_devidp(tmp_path) as idp, serve(create_demo_api(DemoApiSettings(issuer=idp.url))) as api:
        url = f"{idp.url}/token"
        answer = httpx.post(
            url,
            data={"grant_type": "client_credentials"},
            auth=(CLIENT_ID, CLIENT_SECRET),
            headers={"DPoP": rsa_proof(key, "POST", url)},
        )
        assert answer.json()["token_type"] == "DPoP", answer.text
        token = answer.json()["access_token"]
        proof = rsa_proof(key, "GET", api + "/items", access_token=token)
        ok = httpx.get(api + "/items", headers={"Authorization": f"DPoP {token}", "DPoP": proof})
        assert ok.status_code == 200, ok.text
        secret = OctKey.import_key(b"a-shared-secret-that-is-long-enough-0123")
        claims = {"jti": "h", "htm": "GET", "htu": api + "/items", "iat": int(time.time()),
                  "ath": access_token_hash(token)}  # fmt: skip
        header = {"typ": "dpop+jwt", "alg": "HS256", "jwk": {"kty": "oct", "k": "c2VjcmV0"}}
        hmac_proof = jws.serialize_compact(header, json.dumps(claims), secret, algorithms=["HS256"])
        refused = httpx.get(api + "/items", headers={"Authorization": f"DPoP {token}", "DPoP": hmac_proof})
        assert refused.status_code == 401
