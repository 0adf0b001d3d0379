"""``client.credentials`` and ``client.par`` for ``private_key_jwt`` and ``tls_client_auth``, against the reference
IdP on loopback: the client assertion is signed by bff's own ``ClientAuth`` with ``[oidc] private_key_file``, and
the IdP client presents ``[oidc] client_cert`` (RFC 8705 2) over https, as at login. A registered key or
certificate passes; another one fails with the fix naming what to register; no key, assertion or passphrase is
ever printed."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import ECKey

from bff.config import Config
from bff.doctor import Check, run_doctor
from bff_devtools.devidp import ClientRegistration
from tests.support.configs import base_document, make_config
from tests.support.devidp import CLIENT_ID, REDIRECT_URI, IdP, client, running_devidp
from tests.support.pki import Issued, TestPKI
from tests.support.servers import ServerTLS
from tests.test_par_e2e import client_key

PASSPHRASE = "doctor client key passphrase 0123456789"
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.")


def config_for(issuer: str, **oidc: Any) -> Config:
    doc = base_document(public_origin="https://app.example.com", issuer=issuer)
    doc["routes"] = []
    doc["oidc"].update(redirect_uri=REDIRECT_URI, **oidc)
    return make_config(doc)


def client_checks(checks: list[Check]) -> dict[str, Check]:
    return {c.id: c for c in checks if c.group == "client"}


def assert_nothing_secret(checks: list[Check], *secrets: str) -> None:
    printed = json.dumps([c.to_json() for c in checks])
    assert not _JWT.search(printed), "a JWT (the client assertion?) in the doctor's output"
    assert "PRIVATE KEY" not in printed
    for secret in secrets:
        assert secret not in printed


@pytest.fixture(scope="module")
def signed_idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[IdP, Path]]:
    """The reference IdP with a private_key_jwt client registered with one public key, and that key's PEM file."""
    tmp = tmp_path_factory.mktemp("signed")
    key_file, jwks = client_key(tmp)
    registration = ClientRegistration(
        CLIENT_ID, None, redirect_uris=(REDIRECT_URI,), token_endpoint_auth_method="private_key_jwt", jwks=jwks
    )
    with running_devidp(tmp / "idp", (registration,)) as idp:
        yield idp, key_file


async def test_private_key_jwt_with_the_registered_key_passes(signed_idp: tuple[IdP, Path]) -> None:
    idp, key_file = signed_idp
    config = config_for(idp.url, token_endpoint_auth_method="private_key_jwt", private_key_file=str(key_file))
    checks = await run_doctor(config)
    found = client_checks(checks)
    assert {i: c.status for i, c in found.items()} == dict.fromkeys(found, "PASS"), found
    assert set(found) == {"client.redirect_uri", "client.credentials", "client.par"}
    assert "private_key_jwt" in found["client.credentials"].message
    assert_nothing_secret(checks, key_file.read_text())


async def test_private_key_jwt_with_another_key_fails_with_the_fix(
    signed_idp: tuple[IdP, Path], tmp_path: Path
) -> None:
    idp, _ = signed_idp
    other = ECKey.generate_key("P-256", private=True)
    other.ensure_kid()
    other_file = tmp_path / "other.pem"
    other_file.write_bytes(other.as_pem(private=True))
    config = config_for(idp.url, token_endpoint_auth_method="private_key_jwt", private_key_file=str(other_file))
    checks = await run_doctor(config)
    found = client_checks(checks)
    for check_id in ("client.credentials", "client.par"):
        assert found[check_id].status == "FAIL", found[check_id]
        assert "refused the client's credentials" in found[check_id].message
        assert f"public key of [oidc] private_key_file (kid {other.kid})" in found[check_id].fix
    assert_nothing_secret(checks, other_file.read_text(), str(other.as_dict(private=True)["d"]))


async def test_an_unusable_private_key_fails_without_a_probe(signed_idp: tuple[IdP, Path], tmp_path: Path) -> None:
    idp, _ = signed_idp
    public = tmp_path / "public.pem"
    public.write_bytes(ECKey.generate_key("P-256", private=True).as_pem(private=False))
    config = config_for(idp.url, token_endpoint_auth_method="private_key_jwt", private_key_file=str(public))
    found = client_checks(await run_doctor(config))
    assert found["client.credentials"].status == "FAIL"
    assert "oidc.private_key_file: is not a PEM RSA or EC" in found["client.credentials"].message
    assert str(public) not in found["client.credentials"].message  # a path may come from the environment
    assert found["client.par"].status == "SKIP"


@dataclasses.dataclass(frozen=True)
class MTLS:
    idp: IdP
    pki: TestPKI
    registered: Issued
    self_signed: Issued


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MTLS]:
    """The reference IdP over https: client spa-bff registered with tls_client_auth for subject CN=bff-client, and
    client self-signed with self_signed_tls_client_auth for one self-signed certificate."""
    tmp = tmp_path_factory.mktemp("mtls")
    pki = TestPKI(tmp / "pki")
    self_signed = pki.client("self-signed-bff", self_signed=True)
    registrations = (
        dataclasses.replace(
            client(secret=None),
            token_endpoint_auth_method="tls_client_auth",
            tls_client_auth_subject_dn="CN=bff-client",
        ),
        dataclasses.replace(
            client("self-signed", secret=None),
            token_endpoint_auth_method="self_signed_tls_client_auth",
            self_signed_certificates=(self_signed.x5t_s256,),
        ),
    )
    # Python's ssl verifies every client certificate: the self-signed one is trusted alongside the CA.
    trusted = tmp / "client-trust.pem"
    trusted.write_bytes(pki.ca.cert.read_bytes() + self_signed.cert.read_bytes())
    server = pki.server("idp")
    with running_devidp(tmp / "idp", registrations, tls=ServerTLS(server.cert, server.key, trusted)) as idp:
        yield MTLS(idp, pki, pki.client("bff-client", password=PASSPHRASE), self_signed)


def mtls_config(world: MTLS, cert: Issued, password: str | None = PASSPHRASE, **oidc: Any) -> Config:
    tls: dict[str, Any] = {"client_cert": str(cert.cert), "client_key": str(cert.key)}
    if password is not None:
        tls["client_key_password"] = password
    settings = {"token_endpoint_auth_method": "tls_client_auth", "ca_bundle": str(world.pki.ca.cert), **tls, **oidc}
    config = config_for(world.idp.url, **settings)
    return dataclasses.replace(config, oidc=dataclasses.replace(config.oidc, client_secret=None))


async def test_tls_client_auth_with_the_registered_certificate_passes(mtls: MTLS) -> None:
    checks = await run_doctor(mtls_config(mtls, mtls.registered))
    found = client_checks(checks)
    assert {i: c.status for i, c in found.items()} == dict.fromkeys(found, "PASS"), found
    assert "tls_client_auth" in found["client.credentials"].message
    assert_nothing_secret(checks, PASSPHRASE, mtls.registered.key.read_text())


async def test_tls_client_auth_with_another_certificate_fails_with_the_fix(mtls: MTLS) -> None:
    other = mtls.pki.client("someone-else")
    found = client_checks(await run_doctor(mtls_config(mtls, other, password=None)))
    credentials = found["client.credentials"]
    assert credentials.status == "FAIL", credentials
    assert "refused the client's credentials (tls_client_auth" in credentials.message
    assert "register tls_client_auth_subject_dn 'CN=someone-else'" in credentials.fix
    assert found["client.par"].status == "FAIL"


@pytest.mark.parametrize("registered", [True, False], ids=["registered", "another"])
async def test_self_signed_tls_client_auth(mtls: MTLS, registered: bool) -> None:
    cert = mtls.self_signed if registered else mtls.pki.client("not-registered")
    oidc = {"client_id": "self-signed", "token_endpoint_auth_method": "self_signed_tls_client_auth"}
    credentials = client_checks(await run_doctor(mtls_config(mtls, cert, password=None, **oidc)))["client.credentials"]
    if registered:
        assert credentials.status == "PASS", credentials
    else:
        assert credentials.status == "FAIL", credentials
        assert f"register [oidc] client_cert (x5t#S256 {cert.x5t_s256})" in credentials.fix


async def test_tls_client_auth_without_a_certificate_the_idp_trusts_fails(mtls: MTLS, tmp_path: Path) -> None:
    # bff presents its certificate on every connection to the IdP, discovery included: the handshake fails there.
    stranger = TestPKI(tmp_path / "stranger", "a CA the IdP does not trust").client("bff-client")
    checks = {c.id: c for c in await run_doctor(mtls_config(mtls, stranger, password=None))}
    fetch = checks["idp.discovery.fetch"]
    assert fetch.status == "FAIL", fetch
    assert "trusts the CA of [oidc] client_cert" in fetch.fix
    assert checks["client.credentials"].status == "SKIP"


async def test_an_unusable_client_certificate_fails_and_names_the_key(mtls: MTLS) -> None:
    config = mtls_config(mtls, mtls.registered, password="not the passphrase")
    checks = await run_doctor(config)
    found = client_checks(checks)
    assert found["client.credentials"].status == "FAIL"
    assert "client_key_password is wrong" in found["client.credentials"].message
    assert found["client.redirect_uri"].status == "PASS"
    assert_nothing_secret(checks, "not the passphrase")
