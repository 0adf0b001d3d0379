"""Mutual-TLS client authentication and certificate-bound access tokens (RFC 8705) for the reference IdP.

The client's certificate reaches the app through the ASGI TLS extension (``scope["extensions"]["tls"]``,
``client_cert_chain``: PEM, leaf first). uvicorn does not fill it in; :class:`TLSScopeProtocol` (the protocol of
``bff devidp --ssl-certfile``, and of the tests' TLS servers) does, from the connection's TLS object.

Python's ``ssl`` verifies every certificate a client presents against the server's trust store: a
``self_signed_tls_client_auth`` client's certificate must therefore be in ``--ssl-ca-certs`` too (a real IdP
accepts any certificate there and compares it with the client's registered one, RFC 8705 2.2).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ssl
from typing import Any

from authlib.oauth2.rfc6749 import InvalidClientError

from bff.serving.httptools_protocol import CoalescingHttpToolsProtocol

#: RFC 8705 2.1 and 2.2.
TLS_METHODS = ("tls_client_auth", "self_signed_tls_client_auth")


class TLSScopeProtocol(CoalescingHttpToolsProtocol):
    """bff's HTTP protocol with the ASGI TLS extension in every request's scope (on TLS connections)."""

    _tls: dict[str, Any] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            der = ssl_object.getpeercert(binary_form=True)
            self._tls = {
                "tls_version": None,
                "cipher_suite": None,
                "server_cert": None,
                "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
                "client_cert_name": None,
                "client_cert_error": None,
            }
        super().connection_made(transport)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls is not None:
            self.scope["extensions"] = {"tls": self._tls}  # type: ignore[dict-item]  # ASGI TLS extension


def client_certificate(scope: Any) -> bytes | None:
    """The DER of the client's TLS certificate, from the ASGI TLS extension; None without one."""
    chain = scope.get("extensions", {}).get("tls", {}).get("client_cert_chain") or []
    if not chain:
        return None
    return ssl.PEM_cert_to_DER_cert(chain[0])


def x5t_s256(der: bytes) -> str:
    """RFC 8705 3.1: the base64url SHA-256 of the certificate's DER."""
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode("ascii")


def subject_dn(der: bytes) -> str:
    """The certificate's subject as RFC 4514 writes it (what ``tls_client_auth_subject_dn`` is compared with)."""
    from cryptography import x509

    return x509.load_der_x509_certificate(der).subject.rfc4514_string()


def authenticate_by_certificate(method: str) -> Any:
    """authlib's client-authentication hook for ``method``: the client names itself with ``client_id`` (RFC 8705
    2) and the connection's certificate must be the one registered (subject DN, or the self-signed certificate)."""

    def authenticate(query_client: Any, request: Any) -> Any:
        client_id = request.payload.data.get("client_id")
        der = request.http.client_cert
        if not client_id or der is None:
            return None
        client = query_client(client_id)
        if client is None or client.registration.token_endpoint_auth_method != method:
            return None
        registration = client.registration
        if method == "tls_client_auth" and subject_dn(der) == registration.tls_client_auth_subject_dn:
            return client
        if method == "self_signed_tls_client_auth" and x5t_s256(der) in registration.self_signed_certificates:
            return client
        raise InvalidClientError(description="The client certificate is not the one registered for this client.")

    return authenticate
