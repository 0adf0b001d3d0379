"""The reference IdP binds an authorization code to a DPoP key (RFC 9449 10): ``dpop_jkt`` in the authorization
request (plain or pushed), or the key of the push's DPoP proof (10.1); the code is redeemed with that key only."""

from __future__ import annotations

import time
from urllib.parse import urlencode

import httpx
from joserfc.jwk import ECKey

from bff.oidc.dpop import DPoPProver
from tests.devidp.test_par import BASIC, push, pushed_params
from tests.support.devidp import CLIENT_ID, REDIRECT_URI, Authorization, IdP, OAuthClient, query_of


def prover() -> DPoPProver:
    return DPoPProver(ECKey.generate_key("P-256", private=True), clock=time.time)


async def redeem(oauth: OAuthClient, code: str, verifier: str, key: DPoPProver | None) -> httpx.Response:
    url = f"{oauth.idp.url}/token"
    headers = {"Authorization": BASIC} | ({} if key is None else {"DPoP": key.proof("POST", url)})
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": verifier}
    return await oauth.http.post(url, data=form, headers=headers)


async def pushed_login(oauth: OAuthClient, idp: IdP, key: DPoPProver, **params: str) -> tuple[str, str]:
    """Push with a proof of ``key``, log in: the code and its PKCE verifier."""
    form, verifier = pushed_params(oauth, **params)
    answer = await push(oauth, form, headers={"DPoP": key.proof("POST", f"{idp.url}/par")})
    assert answer.status_code == 201, answer.text
    at_idp = f"{idp.url}/authorize?{urlencode({'client_id': CLIENT_ID, 'request_uri': answer.json()['request_uri']})}"
    page = await oauth.browser.request("GET", at_idp)
    redirect = await oauth.submit_login(page, "alice", "wonderland") if page.status_code == 200 else page
    return query_of(redirect.headers["location"])["code"], verifier


async def test_a_code_pushed_with_a_dpop_key_is_refused_with_another(oauth: OAuthClient, idp: IdP) -> None:
    bound, other = prover(), prover()
    code, verifier = await pushed_login(oauth, idp, bound)
    refused = await redeem(oauth, code, verifier, other)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "invalid_grant"
    assert "DPoP key" in refused.json()["error_description"]
    code, verifier = await pushed_login(oauth, idp, bound, dpop_jkt=bound.jkt)
    assert (await redeem(oauth, code, verifier, None)).status_code == 400, "without a proof"
    code, verifier = await pushed_login(oauth, idp, bound, dpop_jkt=bound.jkt)
    redeemed = await redeem(oauth, code, verifier, bound)
    assert redeemed.status_code == 200, redeemed.text
    assert redeemed.json()["token_type"] == "DPoP"


async def test_a_push_whose_dpop_jkt_is_not_its_proof_key_is_refused(oauth: OAuthClient, idp: IdP) -> None:
    form, _ = pushed_params(oauth, dpop_jkt=prover().jkt)
    answer = await push(oauth, form, headers={"DPoP": prover().proof("POST", f"{idp.url}/par")})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "invalid_dpop_proof"


async def test_a_plain_request_binds_the_code_to_its_dpop_jkt(oauth: OAuthClient) -> None:
    bound = prover()
    authorization: Authorization = await oauth.authorize(dpop_jkt=bound.jkt)
    refused = await redeem(oauth, authorization.params["code"], authorization.verifier, prover())
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "invalid_grant"
    authorization = await oauth.authorize(dpop_jkt=bound.jkt)
    redeemed = await redeem(oauth, authorization.params["code"], authorization.verifier, bound)
    assert redeemed.status_code == 200, redeemed.text


async def test_an_unbound_code_still_works_without_dpop(oauth: OAuthClient) -> None:
    authorization = await oauth.authorize()
    assert (await redeem(oauth, authorization.params["code"], authorization.verifier, None)).status_code == 200
