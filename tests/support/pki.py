"""A throwaway PKI for mutual-TLS tests: a CA, a server certificate for 127.0.0.1, client certificates (signed by
the CA or self-signed, optionally with an encrypted key or already expired), all written as PEM files."""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path
    certificate: x509.Certificate

    @property
    def x5t_s256(self) -> str:
        """RFC 8705 3.1: the base64url SHA-256 of the DER certificate."""
        digest = hashlib.sha256(self.certificate.public_bytes(serialization.Encoding.DER)).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _alt_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


class TestPKI:
    """Issues into ``directory``; every certificate is valid from a minute ago for an hour unless told otherwise."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, directory: Path, name: str = "bff test CA") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = _name(name)
        self.ca = self._write(name.replace(" ", "-"), self._build(self._name, self._key, ca=True), self._key, None)

    def _build(
        self,
        subject: x509.Name,
        key: ec.EllipticCurvePrivateKey,
        *,
        ca: bool = False,
        server: bool = False,
        self_signed: bool = False,
        expired: bool = False,
        host: str = "127.0.0.1",
    ) -> x509.Certificate:
        now = datetime.datetime.now(datetime.UTC)
        start, end = (
            (now - datetime.timedelta(days=2), now - datetime.timedelta(days=1))
            if expired
            else (
                now - datetime.timedelta(minutes=1),
                now + datetime.timedelta(hours=1),
            )
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject if ca or self_signed else self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), True)
        )
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([_alt_name(host)]), False).add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False
            )
        elif not ca:
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        return builder.sign(key if ca or self_signed else self._key, hashes.SHA256())

    def _write(
        self, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, password: str | None
    ) -> Issued:
        cert_file, key_file = self.directory / f"{stem}.crt", self.directory / f"{stem}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
        )
        key_file.write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
        )
        return Issued(cert_file, key_file, cert)

    def server(self, stem: str = "server", host: str = "127.0.0.1") -> Issued:
        """A server certificate for ``host`` (an IP address or a DNS name)."""
        key = ec.generate_private_key(ec.SECP256R1())
        return self._write(stem, self._build(_name(host), key, server=True, host=host), key, None)

    def client(
        self, common_name: str, *, password: str | None = None, expired: bool = False, self_signed: bool = False
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._build(_name(common_name), key, expired=expired, self_signed=self_signed)
        return self._write(common_name, cert, key, password)
