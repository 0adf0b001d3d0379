"""What ``[oidc] request_object`` and ``profile = "fapi2"`` ask of the IdP's metadata (``bff.oidc.profiles``), and
how request objects are signed (``bff.oidc.request_object``): one problem per missing capability, the algorithm
from bff's allow-list and the IdP's, registered claims that the parameters cannot override."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from bff.config import OIDCSettings
from bff.errors import ConfigError
from bff.oidc.client_auth import ClientAuth
from bff.oidc.discovery import ProviderMetadata
from bff.oidc.profiles import fapi2_problems, plan_authorization
from bff.oidc.request_object import REQUEST_OBJECT_TYP, RequestObjectSigner, request_object_alg

ISSUER = "https://idp.example.com"
FAPI2_METADATA: dict[str, Any] = {
    "pushed_authorization_request_endpoint": f"{ISSUER}/par",
    "code_challenge_methods_supported": ["S256"],
    "authorization_response_iss_parameter_supported": True,
    "token_endpoint_auth_methods_supported": ["private_key_jwt"],
    "dpop_signing_alg_values_supported": ["ES256"],
    "id_token_signing_alg_values_supported": ["PS256"],
    "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
    "response_types_supported": ["code"],
}


def metadata(**extra: Any) -> ProviderMetadata:
    document = {
        "issuer": ISSUER,
        "authorization_endpoint": f"{ISSUER}/authorize",
        "token_endpoint": f"{ISSUER}/token",
        "jwks_uri": f"{ISSUER}/jwks",
        **extra,
    }
    return ProviderMetadata.from_json({k: v for k, v in document.items() if v is not None}, issuer=ISSUER)


def key_file(tmp_path: Path, key: RSAKey | ECKey) -> str:
    path = tmp_path / "client.pem"
    path.write_bytes(key.as_pem(private=True))
    return str(path)


def fapi2_settings(tmp_path: Path, **extra: Any) -> OIDCSettings:
    values: dict[str, Any] = {
        "issuer": ISSUER,
        "client_id": "spa-bff",
        "token_endpoint_auth_method": "private_key_jwt",
        "private_key_file": key_file(tmp_path, ECKey.generate_key("P-256", private=True)),
        "profile": "fapi2",
        "par": "required",
        "dpop": True,
        "id_token_signing_algs": ("PS256", "ES256"),
        **extra,
    }
    return OIDCSettings(**values)


def client_auth(settings: OIDCSettings, meta: ProviderMetadata) -> ClientAuth:
    return ClientAuth(settings, meta, httpx.AsyncClient(), clock=time.time)


def plan(settings: OIDCSettings, meta: ProviderMetadata, **options: str) -> Any:
    return plan_authorization(settings, meta, client_auth(settings, meta), **options)


def problems_of(settings: OIDCSettings, meta: ProviderMetadata) -> list[str]:
    return fapi2_problems(settings, meta, client_auth(settings, meta))


def test_an_idp_with_every_capability_passes(tmp_path: Path) -> None:
    settings = fapi2_settings(tmp_path)
    assert problems_of(settings, metadata(**FAPI2_METADATA)) == []
    assert plan(settings, metadata(**FAPI2_METADATA)).par_endpoint == f"{ISSUER}/par"


@pytest.mark.parametrize(
    ("missing", "expected"),
    [
        ({"pushed_authorization_request_endpoint": None}, "no pushed_authorization_request_endpoint"),
        ({"code_challenge_methods_supported": ["plain"]}, "S256"),
        ({"code_challenge_methods_supported": None}, "S256"),
        ({"authorization_response_iss_parameter_supported": "true"}, "authorization_response_iss_parameter_supported"),
        ({"token_endpoint_auth_methods_supported": ["client_secret_basic"]}, "does not list private_key_jwt"),
        ({"dpop_signing_alg_values_supported": ["RS256"]}, "ES256 in dpop_signing_alg_values_supported"),
        ({"id_token_signing_alg_values_supported": ["RS256"]}, "signs ID tokens with none of PS256, ES256"),
        ({"token_endpoint_auth_signing_alg_values_supported": ["RS256"]}, "does not list ES256 (the client asser"),
        ({"token_endpoint_auth_signing_alg_values_supported": None}, "token_endpoint_auth_signing_alg_values_sup"),
        ({"response_types_supported": ["id_token"]}, "does not list code in response_types_supported"),
    ],
)
def test_each_missing_capability_is_one_line(tmp_path: Path, missing: dict[str, Any], expected: str) -> None:
    problems = problems_of(fapi2_settings(tmp_path), metadata(**{**FAPI2_METADATA, **missing}))
    assert len(problems) == 1, problems
    assert expected in problems[0]


def test_without_dpop_the_tokens_must_be_certificate_bound(tmp_path: Path) -> None:
    settings = fapi2_settings(tmp_path, dpop=False, client_cert="/run/c.crt", client_key="/run/c.key")
    problems = problems_of(settings, metadata(**FAPI2_METADATA))
    assert problems == [
        "the IdP's metadata lacks tls_client_certificate_bound_access_tokens: true (RFC 8705 3.3), and dpop is off:"
        " its tokens would not be sender-constrained"
    ]
    bound = metadata(**FAPI2_METADATA, tls_client_certificate_bound_access_tokens=True)
    assert problems_of(settings, bound) == []


def test_an_rsa_key_signs_assertions_ps256_and_other_curves_are_refused(tmp_path: Path) -> None:
    (tmp_path / "rsa").mkdir()
    (tmp_path / "p384").mkdir()
    rsa_key = key_file(tmp_path / "rsa", RSAKey.generate_key(2048, private=True))
    rsa = fapi2_settings(tmp_path, private_key_file=rsa_key)
    meta = metadata(**FAPI2_METADATA)
    signing_key = client_auth(rsa, meta).signing_key
    assert signing_key is not None
    assert signing_key[1] == "PS256"
    assert problems_of(rsa, meta) == [
        "the IdP's metadata does not list PS256 (the client assertion's algorithm) in"
        " token_endpoint_auth_signing_alg_values_supported (ES256), which profile = 'fapi2' requires (FAPI 2.0 SP"
        " 5.4.1)"
    ]
    p384_key = key_file(tmp_path / "p384", ECKey.generate_key("P-384", private=True))
    p384 = fapi2_settings(tmp_path, private_key_file=p384_key)
    (problem,) = problems_of(p384, meta)
    assert problem.startswith("private_key_file's key signs client assertions with ES384")


def test_the_refusal_names_the_frontend(tmp_path: Path) -> None:
    bare = {**FAPI2_METADATA, "authorization_response_iss_parameter_supported": None}
    with pytest.raises(ConfigError) as caught:
        plan(fapi2_settings(tmp_path), metadata(**bare), key="frontends['shop'].oidc")
    assert caught.value.problems == [
        "frontends['shop'].oidc: the IdP's metadata lacks authorization_response_iss_parameter_supported: true"
        " (RFC 9207, FAPI 2.0 SP 5.3.2.2)"
    ]


def test_the_refusal_lists_every_problem_with_its_section(tmp_path: Path) -> None:
    bare = {**FAPI2_METADATA, "pushed_authorization_request_endpoint": None, "code_challenge_methods_supported": None}
    with pytest.raises(ConfigError) as caught:
        plan(fapi2_settings(tmp_path), metadata(**bare))
    assert len(caught.value.problems) == 2, "the PAR line is not repeated for par = required and for fapi2"
    assert all(problem.startswith("oidc: the IdP's metadata") for problem in caught.value.problems)


@pytest.mark.parametrize(
    ("key", "supported", "allowed", "expected"),
    [
        (RSAKey.generate_key(2048, private=True), [], None, "PS256"),
        (RSAKey.generate_key(2048, private=True), ["RS256"], None, "RS256"),
        (RSAKey.generate_key(2048, private=True), ["RS256"], ("PS256", "ES256", "EdDSA"), None),
        (ECKey.generate_key("P-256", private=True), ["PS256", "ES256"], None, "ES256"),
        (ECKey.generate_key("P-256", private=True), ["none", "HS256"], None, None),
        (ECKey.generate_key("P-384", private=True), [], None, None),
    ],
)
def test_the_request_object_algorithm(key: Any, supported: list[str], allowed: Any, expected: str | None) -> None:
    options = {} if allowed is None else {"allowed": allowed}
    assert request_object_alg(key, supported, **options) == expected


def test_request_object_problems(tmp_path: Path) -> None:
    requires = metadata(require_signed_request_object=True, request_object_signing_alg_values_supported=["RS256"])
    base = OIDCSettings(issuer=ISSUER, client_id="spa-bff", token_endpoint_auth_method="none")
    with pytest.raises(ConfigError, match="set private_key_file"):
        plan(base, requires)
    off = OIDCSettings(issuer=ISSUER, client_id="spa-bff", token_endpoint_auth_method="none", request_object="off")
    with pytest.raises(ConfigError, match="request_object = 'off', but the IdP"):
        plan(off, requires)
    ec = key_file(tmp_path, ECKey.generate_key("P-256", private=True))
    signed = OIDCSettings(issuer=ISSUER, client_id="spa-bff", token_endpoint_auth_method="none", private_key_file=ec)
    with pytest.raises(ConfigError, match=r"no request object signing algorithm fits .*\(RS256\)"):
        plan(signed, requires)
    assert plan(signed, metadata(require_signed_request_object=True)).request_object_alg == "ES256"
    assert plan(signed, metadata()).request_object_alg is None, "auto: only when the IdP requires them"


def test_the_parameters_cannot_override_the_registered_claims() -> None:
    key = ECKey.generate_key("P-256", private=True)
    key.ensure_kid()
    now = 1_700_000_000
    signer = RequestObjectSigner(key, "ES256", client_id="spa-bff", audience=ISSUER, clock=lambda: now)
    token = signer.sign({"iss": "evil", "aud": "elsewhere", "exp": "9999999999", "client_id": "other", "state": "S"})
    decoded = jwt.decode(token, key, algorithms=["ES256"])
    assert decoded.header == {"alg": "ES256", "typ": REQUEST_OBJECT_TYP, "kid": key.kid}
    claims = decoded.claims
    assert (claims["iss"], claims["aud"], claims["client_id"], claims["state"]) == ("spa-bff", ISSUER, "spa-bff", "S")
    assert (claims["iat"], claims["nbf"], claims["exp"]) == (now, now, now + 300)
    assert jwt.decode(signer.sign({}), key, algorithms=["ES256"]).claims["jti"] != claims["jti"], "a fresh jti"
