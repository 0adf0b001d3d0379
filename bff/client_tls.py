"""Client certificates for mutual TLS (RFC 8705): checked once at ``bff check`` and at start, so a bad file, a wrong
passphrase, a key of another certificate or an expired certificate is a configuration error naming its key, never a
handshake failure at the first request.

The TLS contexts themselves are built where the connections are made (``bff.upstream.client``, ``bff.idp_http``).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from bff.config import Config, Secret
from bff.errors import ConfigError


@dataclass(frozen=True)
class ClientCertificate:
    """Where a client certificate is configured (``oidc`` or ``routes[0]``) and its files."""

    where: str
    cert: str
    key: str
    password: Secret | None


def configured_certificates(config: Config) -> list[ClientCertificate]:
    oidc = config.oidc
    found = []
    if oidc.client_cert and oidc.client_key:
        found.append(ClientCertificate("oidc", oidc.client_cert, oidc.client_key, oidc.client_key_password))
    for index, route in enumerate(config.routes):
        if route.client_cert and route.client_key:
            found.append(
                ClientCertificate(f"routes[{index}]", route.client_cert, route.client_key, route.client_key_password)
            )
    return found


def _read(path: str, where: str, name: str, problems: list[str]) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        problems.append(f"{where}.{name}: cannot read the file ({exc.strerror or type(exc).__name__})")
        return None


def _private_key(pem: bytes, spec: ClientCertificate, problems: list[str]) -> PrivateKeyTypes | None:
    password = spec.password.reveal().encode() if spec.password is not None else None
    try:
        return serialization.load_pem_private_key(pem, password=password)
    except TypeError:  # encrypted without a passphrase given, or a passphrase given for a plain key
        if password is None:
            problems.append(f"{spec.where}.client_key: is encrypted: set client_key_password")
        else:
            problems.append(f"{spec.where}.client_key_password: is set but client_key is not encrypted")
    except ValueError:  # a wrong passphrase and a file that is no PEM key look alike to OpenSSL
        problems.append(f"{spec.where}.client_key: is not a PEM private key, or client_key_password is wrong")
    return None


def check_certificate(spec: ClientCertificate, now: datetime) -> tuple[list[str], x509.Certificate | None]:
    """The problems of one client certificate, and the certificate when it is usable."""
    problems: list[str] = []
    cert_pem = _read(spec.cert, spec.where, "client_cert", problems)
    key_pem = _read(spec.key, spec.where, "client_key", problems)
    if cert_pem is None or key_pem is None:
        return problems, None
    try:
        cert = x509.load_pem_x509_certificates(cert_pem)[0]  # the leaf first (RFC 8446 4.4.2), then its chain
    except ValueError:
        problems.append(f"{spec.where}.client_cert: is not a PEM certificate")
        return problems, None
    key = _private_key(key_pem, spec, problems)
    if key is None:
        return problems, None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if key.public_key().public_bytes(encoding, public) != cert.public_key().public_bytes(encoding, public):
        problems.append(f"{spec.where}.client_key: is not the private key of client_cert")
    if cert.not_valid_after_utc <= now:
        problems.append(f"{spec.where}.client_cert: expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    elif cert.not_valid_before_utc > now:
        problems.append(f"{spec.where}.client_cert: is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    return problems, cert


def thumbprint(cert: x509.Certificate) -> str:
    """RFC 8705 3.1: ``x5t#S256``, the base64url SHA-256 of the certificate's DER encoding."""
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def check_client_certificates(config: Config, *, now: datetime | None = None) -> None:
    """Raise ConfigError listing every unusable client certificate, and every route with ``certificate_bound``
    whose certificate is not the IdP client's: the upstream would refuse each of its tokens (RFC 8705 3)."""
    now = now or datetime.now(tz=UTC)
    problems: list[str] = []
    prints: dict[str, str] = {}
    for spec in configured_certificates(config):
        found, cert = check_certificate(spec, now)
        problems.extend(found)
        if cert is not None and not found:
            prints[spec.where] = thumbprint(cert)
    for index, route in enumerate(config.routes):
        where = f"routes[{index}]"
        if route.certificate_bound and where in prints and "oidc" in prints and prints[where] != prints["oidc"]:
            problems.append(
                f"{where}.client_cert: certificate_bound needs the same certificate as [oidc] client_cert "
                f"(x5t#S256 {prints[where]} is not {prints['oidc']}): the IdP binds tokens to that one (RFC 8705 3)"
            )
    if problems:
        raise ConfigError(problems)
