"""The client's credentials as bff's logins present them, for the dry token and PAR requests of ``client.*``.

Every method is probed with bff's own code: ``bff.oidc.client_auth.ClientAuth`` adds the secret, signs the
``private_key_jwt`` assertion (RFC 7523 3) with ``[oidc] private_key_file``, or names the client for the
``tls_client_auth`` methods, whose certificate (``[oidc] client_cert``, checked by ``bff.client_tls``) the IdP
client presents on every connection (RFC 8705 2), as bff's does. The endpoints are the IdP's mTLS aliases when a
certificate is configured (RFC 8705 5). With ``[oidc] dpop`` every dry request carries a proof from bff's
``DPoPProver`` with ``dpop_key_file`` and is replayed once with the IdP's nonce after ``use_dpop_nonce`` (RFC 9449
4, 8); with ``[oidc] request_object`` the authorization parameters travel as the request object bff's
``RequestObjectSigner`` signs (RFC 9101). Nothing here ever reaches a message: no secret, key, assertion or proof.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from bff.client_tls import ClientCertificate, check_certificate, thumbprint
from bff.config import Config, OIDCSettings
from bff.config.values import TLS_AUTH_METHODS
from bff.doctor.probe import Answer, NoAnswer, call
from bff.errors import BffError, ConfigError
from bff.idp_http import idp_client_cert
from bff.oidc.client_auth import ClientAuth
from bff.oidc.discovery import ProviderMetadata
from bff.oidc.dpop import DPoPProver, load_dpop_key
from bff.oidc.profiles import request_object_signer
from bff.oidc.request_object import RequestObjectSigner
from bff.types import Clock, JSONObject

#: What a ``[oidc] client_cert`` is given to the IdP client as: certificate file, key file, key passphrase.
CertFiles = tuple[str, str, str | None]


@dataclass(frozen=True)
class IdPCertificate:
    """``[oidc] client_cert`` for the IdP client: ``files`` when usable; else ``problems`` say why not."""

    files: CertFiles | None = None
    #: What the IdP registers for the certificate (RFC 8705 2.1 subject DN, 2.2 ``x5t#S256``), for the fix.
    subject: str = ""
    x5t_s256: str = ""
    problems: list[str] = field(default_factory=list)


def idp_certificate(oidc: OIDCSettings, clock: Clock) -> IdPCertificate:
    files = idp_client_cert(oidc)
    if files is None:
        return IdPCertificate()
    spec = ClientCertificate("oidc", files[0], files[1], oidc.client_key_password)
    problems, cert = check_certificate(spec, datetime.fromtimestamp(clock(), tz=UTC))
    if problems or cert is None:
        return IdPCertificate(problems=problems)
    return IdPCertificate(files, cert.subject.rfc4514_string(), thumbprint(cert))


@dataclass(frozen=True)
class Unusable:
    """Why bff cannot authenticate as the client (it would refuse to start), and what to change."""

    message: str
    fix: str


def client_auth(
    config: Config, http: httpx.AsyncClient, document: JSONObject, clock: Clock
) -> tuple[ProviderMetadata, ClientAuth] | Unusable:
    """The IdP's metadata as bff reads it, and bff's client authentication over ``http``."""
    settings = config.oidc
    try:
        metadata = ProviderMetadata.from_json(document, issuer=settings.issuer)
        return metadata, ClientAuth(settings, metadata, http, clock=clock)
    except ConfigError as exc:
        return Unusable("; ".join(exc.problems)[:500], "fix [oidc] as the message says")
    except BffError as exc:
        return Unusable(exc.message[:500], "fix the IdP's discovery document")


@dataclass(frozen=True)
class Credentials:
    """The client's credentials, ready to add to one dry request each (a fresh assertion every time)."""

    auth: ClientAuth
    metadata: ProviderMetadata
    certificate: IdPCertificate
    #: bff's DPoP key and the IdP's nonces when ``[oidc] dpop``.
    dpop: DPoPProver | None = None
    #: What signs the request objects when ``[oidc] request_object`` and the IdP call for them.
    signer: RequestObjectSigner | None = None

    def endpoint(self, name: str, default: str) -> str:
        """RFC 8705 5: with a client certificate, bff calls the IdP's mTLS alias of an endpoint where it has one."""
        aliases = self.metadata.mtls_endpoint_aliases if self.certificate.files is not None else {}
        return aliases.get(name, default)

    def form(self, fields: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        """``fields`` with the client's credentials added as bff's logins add them: (form, headers)."""
        form, headers = dict(fields), {"Accept": "application/json"}
        self.auth.apply(form, headers)
        return form, headers

    def authorization(self, params: dict[str, str], *, pushed: bool) -> dict[str, str]:
        """An authorization request's ``params`` as a login sends them: bound to bff's DPoP key (RFC 9449 10),
        carried in a signed request object when one is called for (RFC 9101)."""
        params = dict(params)
        if self.dpop is not None:
            params["dpop_jkt"] = self.dpop.jkt
        return params if self.signer is None else self.signer.request(params, pushed=pushed)

    async def post(self, http: httpx.AsyncClient, url: str, fields: dict[str, str]) -> Answer | NoAnswer:
        """POST ``fields`` with the client's credentials, and a DPoP proof when ``[oidc] dpop``, replayed once with
        the IdP's nonce after ``use_dpop_nonce`` (RFC 9449 8), as bff's token requests and pushes are."""
        answer = await self._post_once(http, url, fields)
        if (
            self.dpop is not None
            and isinstance(answer, Answer)
            and self.dpop.nonce_demanded(url, answer.status, answer.body, answer.headers.get("dpop-nonce"))
        ):
            answer = await self._post_once(http, url, fields)  # a fresh proof, with the nonce, and fresh credentials
        return answer

    async def _post_once(self, http: httpx.AsyncClient, url: str, fields: dict[str, str]) -> Answer | NoAnswer:
        data, headers = self.form(fields)
        if self.dpop is not None:
            headers["DPoP"] = self.dpop.proof("POST", url)
        return await call(http, "POST", url, data=data, headers=headers)


def credentials(
    config: Config, http: httpx.AsyncClient, document: JSONObject, certificate: IdPCertificate, clock: Clock
) -> Credentials | Unusable:
    method = config.oidc.token_endpoint_auth_method
    if certificate.problems:
        return Unusable(
            "; ".join(certificate.problems)[:500],
            "fix [oidc] client_cert, client_key and client_key_password as the message says",
        )
    found = client_auth(config, http, document, clock)
    if isinstance(found, Unusable):
        return found
    if method in TLS_AUTH_METHODS and certificate.files is None:
        return Unusable(f"{method} needs [oidc] client_cert and client_key", "set both (RFC 8705 2)")
    metadata, auth = found
    dpop = None
    if config.oidc.dpop and config.oidc.dpop_key_file:
        try:
            dpop = DPoPProver(load_dpop_key(config.oidc.dpop_key_file), clock=clock)
        except ConfigError as exc:
            return Unusable("; ".join(exc.problems)[:500], "set [oidc] dpop_key_file to a PEM EC P-256 private key")
    signer = request_object_signer(config.oidc, metadata, auth, clock)
    return Credentials(auth, metadata, certificate, dpop, signer)


def credentials_fix(config: Config, certificate: IdPCertificate, auth: ClientAuth | None) -> str:
    """What to register at the IdP (or to change in ``[oidc]``) when it refuses the client's credentials."""
    oidc = config.oidc
    method = oidc.token_endpoint_auth_method
    client = f"client {oidc.client_id!r}"
    if method == "private_key_jwt" and auth is not None and auth.signing_key is not None:
        kid = auth.signing_key[0].kid
        return (
            f"register the public key of [oidc] private_key_file (kid {kid}) for {client} at the IdP with"
            " token_endpoint_auth_method private_key_jwt, or point private_key_file at the registered key"
        )
    if method == "tls_client_auth":
        return (
            f"register tls_client_auth_subject_dn {certificate.subject!r} for {client} at the IdP (and have it trust"
            " the CA of [oidc] client_cert), or set client_cert and client_key to the registered certificate"
        )
    if method == "self_signed_tls_client_auth":
        return (
            f"register [oidc] client_cert (x5t#S256 {certificate.x5t_s256}) for {client} at the IdP, or set"
            " client_cert and client_key to the registered certificate"
        )
    if method == "none":
        return f"register {client} as a public client (token_endpoint_auth_method none) at the IdP"
    return "set [oidc] client_secret (and token_endpoint_auth_method) to the client's registration at the IdP"
