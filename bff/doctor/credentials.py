"""The client's credentials as bff's logins present them, for the dry token and PAR requests of ``client.*``.

Every method is probed with bff's own code: ``bff.oidc.client_auth.ClientAuth`` adds the secret, signs the
``private_key_jwt`` assertion (RFC 7523 3) with ``[oidc] private_key_file``, or names the client for the
``tls_client_auth`` methods, whose certificate (``[oidc] client_cert``, checked by ``bff.client_tls``) the IdP
client presents on every connection (RFC 8705 2), as bff's does. The endpoints are the IdP's mTLS aliases when a
certificate is configured (RFC 8705 5). Nothing here ever reaches a message: no secret, key or assertion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from bff.client_tls import ClientCertificate, check_certificate, thumbprint
from bff.config import Config, OIDCSettings
from bff.config.values import TLS_AUTH_METHODS
from bff.errors import BffError, ConfigError
from bff.idp_http import idp_client_cert
from bff.oidc.client_auth import ClientAuth
from bff.oidc.discovery import ProviderMetadata
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

    def endpoint(self, name: str, default: str) -> str:
        """RFC 8705 5: with a client certificate, bff calls the IdP's mTLS alias of an endpoint where it has one."""
        aliases = self.metadata.mtls_endpoint_aliases if self.certificate.files is not None else {}
        return aliases.get(name, default)

    def form(self, fields: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        """``fields`` with the client's credentials added as bff's logins add them: (form, headers)."""
        form, headers = dict(fields), {"Accept": "application/json"}
        self.auth.apply(form, headers)
        return form, headers


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
    return Credentials(auth, metadata, certificate)


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
