"""``client.credentials`` and ``client.par`` made the way logins make them, against the reference IdP on loopback:
with ``[oidc] dpop`` the dry token request and the dry PAR carry a DPoP proof signed by bff's ``DPoPProver`` with
``dpop_key_file`` (RFC 9449), replayed once with the IdP's nonce after ``use_dpop_nonce`` (RFC 9449 8); with
``[oidc] request_object`` the dry PAR pushes the request object bff's ``RequestObjectSigner`` signs (RFC 9101). An
IdP that demands either accepts the probes as it accepts logins; no proof, object or key is ever printed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from joserfc.jwk import ECKey

from bff.doctor import run_doctor
from bff.doctor.client import check_client
from bff_devtools.devidp import ClientRegistration
from tests.doctor.test_doctor_credentials import assert_nothing_secret, client_checks, config_for
from tests.support.devidp import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, IdP, running_devidp
from tests.support.par_world import client_key, dpop_key
from tests.support.ports import free_port


@pytest.fixture(scope="module", params=["proof", "proof and nonce"])
def dpop_idp(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdP]:
    """The reference IdP refusing token requests without a DPoP proof (and, with a nonce, first demanding one)."""
    tmp = tmp_path_factory.mktemp("dpop")
    with running_devidp(tmp, require_dpop=True, dpop_nonce=request.param == "proof and nonce") as idp:
        yield idp


async def test_with_dpop_the_probes_carry_a_proof_and_pass(dpop_idp: IdP, tmp_path: Path) -> None:
    key_file = dpop_key(tmp_path)
    config = config_for(dpop_idp.url, client_secret=CLIENT_SECRET, dpop=True, dpop_key_file=str(key_file))
    checks = await run_doctor(config)
    found = client_checks(checks)
    assert {i: c.status for i, c in found.items()} == dict.fromkeys(found, "PASS"), found
    assert set(found) == {"client.redirect_uri", "client.credentials", "client.par"}
    assert_nothing_secret(checks, key_file.read_text(), CLIENT_SECRET)


async def test_without_dpop_an_idp_that_demands_it_is_reported(dpop_idp: IdP) -> None:
    """The doctor probes as configured: without ``dpop`` no proof is sent, and the refusal is shown, not hidden."""
    found = client_checks(await run_doctor(config_for(dpop_idp.url, client_secret=CLIENT_SECRET)))
    assert found["client.credentials"].status == "WARN", found["client.credentials"]
    assert "invalid_dpop_proof" in found["client.credentials"].message


@pytest.fixture(scope="module")
def jar_idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[IdP, Path]]:
    """The reference IdP accepting authorization requests only as signed request objects, from a client registered
    with one public key (``private_key_jwt``), and that key's PEM file."""
    tmp = tmp_path_factory.mktemp("jar")
    key_file, jwks = client_key(tmp)
    registration = ClientRegistration(
        CLIENT_ID, None, redirect_uris=(REDIRECT_URI,), token_endpoint_auth_method="private_key_jwt", jwks=jwks
    )
    with running_devidp(tmp / "idp", (registration,), require_signed_request_object=True) as idp:
        yield idp, key_file


@pytest.mark.parametrize("mode", ["auto", "always"])
async def test_with_request_objects_the_par_probe_pushes_a_signed_one_and_passes(
    jar_idp: tuple[IdP, Path], mode: str
) -> None:
    idp, key_file = jar_idp
    config = config_for(
        idp.url, token_endpoint_auth_method="private_key_jwt", private_key_file=str(key_file), request_object=mode
    )
    checks = await run_doctor(config)
    found = client_checks(checks)
    # The plain authorization request of client.redirect_uri is signed too, as a login without PAR sends it.
    assert {i: c.status for i, c in found.items()} == dict.fromkeys(found, "PASS"), found
    assert_nothing_secret(checks, key_file.read_text())


async def test_a_signed_request_object_also_carries_a_dpop_proof(tmp_path: Path) -> None:
    """Both at once, as a FAPI 2.0 login sends them: the pushed object with a proof, the token request with one."""
    key_file, jwks = client_key(tmp_path)
    registration = ClientRegistration(
        CLIENT_ID, None, redirect_uris=(REDIRECT_URI,), token_endpoint_auth_method="private_key_jwt", jwks=jwks
    )
    with running_devidp(
        tmp_path / "idp", (registration,), require_signed_request_object=True, require_dpop=True, dpop_nonce=True
    ) as idp:
        config = config_for(
            idp.url,
            token_endpoint_auth_method="private_key_jwt",
            private_key_file=str(key_file),
            request_object="always",
            dpop=True,
            dpop_key_file=str(dpop_key(tmp_path)),
        )
        checks = await run_doctor(config)
    found = client_checks(checks)
    assert {i: c.status for i, c in found.items()} == dict.fromkeys(found, "PASS"), found
    assert_nothing_secret(checks, key_file.read_text())


async def test_an_unusable_dpop_key_fails_without_a_probe(dpop_idp: IdP, tmp_path: Path) -> None:
    """bff would refuse to start with it, so the doctor says so instead of probing without a proof."""
    public = tmp_path / "dpop-public.pem"
    public.write_bytes(ECKey.generate_key("P-256", private=True).as_pem(private=False))
    config = config_for(dpop_idp.url, client_secret=CLIENT_SECRET, dpop=True, dpop_key_file=str(public))
    found = client_checks(await run_doctor(config))
    assert found["client.credentials"].status == "FAIL", found["client.credentials"]
    assert "oidc.dpop_key_file: must be an EC P-256 private key" in found["client.credentials"].message
    assert str(public) not in found["client.credentials"].message
    assert found["client.par"].status == "SKIP"


async def test_an_unreachable_authorization_endpoint_is_named_without_the_request_object(
    jar_idp: tuple[IdP, Path],
) -> None:
    """The failure names the endpoint, not the URL whose query carries the signed request object."""
    idp, key_file = jar_idp
    config = config_for(
        idp.url, token_endpoint_auth_method="private_key_jwt", private_key_file=str(key_file), request_object="always"
    )
    async with httpx.AsyncClient() as http:
        document = (await http.get(f"{idp.url}/.well-known/openid-configuration")).json()
        closed = f"http://127.0.0.1:{free_port()}/authorize"
        document["authorization_endpoint"] = closed
        checks = await check_client(config, http, document)
    found = client_checks(checks)
    assert found["client.redirect_uri"].status == "FAIL", found["client.redirect_uri"]
    assert f"cannot reach {closed} (" in found["client.redirect_uri"].message
    assert_nothing_secret(checks, key_file.read_text())
