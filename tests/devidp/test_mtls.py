"""The reference IdP over mutual TLS (RFC 8705): ``tls_client_auth`` and ``self_signed_tls_client_auth`` at the token
endpoint, and access tokens bound to the client's certificate (``cnf.x5t#S256``). Real https on loopback; the
certificates come from the test's own CA."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from tests.support.browser import Browser
from tests.support.devidp import IdP, OAuthClient, client, running_devidp, unverified
from tests.support.pki import Issued, TestPKI
from tests.support.servers import ServerTLS


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return TestPKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def certs(pki: TestPKI) -> dict[str, Issued]:
    return {
        "bff": pki.client("bff-client"),
        "other": pki.client("someone-else"),
        "self": pki.client("self-signed-bff", self_signed=True),
    }


@pytest.fixture
def idp(tmp_path: Path, pki: TestPKI, certs: dict[str, Issued]) -> Iterator[IdP]:
    # Python's ssl verifies every client certificate: the self-signed one is trusted alongside the CA.
    bundle = tmp_path / "client-trust.pem"
    bundle.write_bytes(pki.ca.cert.read_bytes() + certs["self"].cert.read_bytes())
    base = client(secret=None)
    clients = (
        replace(
            base,
            token_endpoint_auth_method="tls_client_auth",
            tls_client_auth_subject_dn="CN=bff-client",
            tls_client_certificate_bound_access_tokens=True,
        ),
        replace(
            base,
            client_id="self-signed",
            token_endpoint_auth_method="self_signed_tls_client_auth",
            self_signed_certificates=(certs["self"].x5t_s256,),
        ),
    )
    tls = ServerTLS(*_server(pki), bundle)
    with running_devidp(tmp_path, clients, tls=tls) as running:
        yield running


def _server(pki: TestPKI) -> tuple[Path, Path]:
    issued = pki.server("idp")
    return issued.cert, issued.key


def trust(pki: TestPKI, cert: Issued | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca.cert))
    if cert is not None:
        context.load_cert_chain(cert.cert, cert.key)
    return context


@pytest.fixture
async def browser(pki: TestPKI) -> AsyncIterator[Browser]:
    b = Browser(verify=trust(pki))
    yield b
    await b.aclose()


async def oauth(
    idp: IdP, browser: Browser, pki: TestPKI, cert: Issued | None, client_id: str = "spa-bff"
) -> OAuthClient:
    http = httpx.AsyncClient(timeout=10, verify=trust(pki, cert))
    return OAuthClient(idp, browser, client_id=client_id, secret=None, http=http)


async def test_the_discovery_document_advertises_rfc_8705(idp: IdP, browser: Browser) -> None:
    metadata = (await browser.request("GET", f"{idp.url}/.well-known/openid-configuration")).json()
    assert {"tls_client_auth", "self_signed_tls_client_auth"} <= set(metadata["token_endpoint_auth_methods_supported"])
    assert metadata["tls_client_certificate_bound_access_tokens"] is True
    assert metadata["mtls_endpoint_aliases"]["token_endpoint"] == f"{idp.url}/token"


async def test_tls_client_auth_issues_tokens_bound_to_the_certificate_also_on_refresh(
    idp: IdP, browser: Browser, pki: TestPKI, certs: dict[str, Issued]
) -> None:
    c = await oauth(idp, browser, pki, certs["bff"])
    try:
        tokens = await c.login()
        _, claims = unverified(tokens["access_token"])
        assert claims["cnf"] == {"x5t#S256": certs["bff"].x5t_s256}
        refreshed = await c.refresh(tokens["refresh_token"])
        assert refreshed.status_code == 200, refreshed.text
        _, claims = unverified(refreshed.json()["access_token"])
        assert claims["cnf"] == {"x5t#S256": certs["bff"].x5t_s256}
    finally:
        await c.aclose()


@pytest.mark.parametrize("who", ["none", "other"])
async def test_without_the_registered_certificate_the_client_is_refused(
    idp: IdP, browser: Browser, pki: TestPKI, certs: dict[str, Issued], who: str
) -> None:
    c = await oauth(idp, browser, pki, None if who == "none" else certs[who])
    try:
        authorization = await c.authorize()
        response = await c.exchange(authorization)
        assert response.status_code in (400, 401)
        assert response.json()["error"] == "invalid_client"
    finally:
        await c.aclose()


async def test_self_signed_tls_client_auth_compares_the_registered_certificate(
    idp: IdP, browser: Browser, pki: TestPKI, certs: dict[str, Issued]
) -> None:
    good = await oauth(idp, browser, pki, certs["self"], client_id="self-signed")
    wrong = await oauth(idp, browser, pki, certs["bff"], client_id="self-signed")
    try:
        tokens = await good.login()
        assert "cnf" not in unverified(tokens["access_token"])[1]  # this client did not register for bound tokens
        refused = await wrong.exchange(await wrong.authorize())
        assert refused.json()["error"] == "invalid_client"
    finally:
        await good.aclose()
        await wrong.aclose()
