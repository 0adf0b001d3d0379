"""The one place where httpx clients for the IdP are configured (discovery, JWKS, token, revocation).

Low-rate control-plane calls use httpx (authlib and respx speak it). The data plane (proxied API calls) has its own
client in ``bff.upstream``.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

import httpx

from bff.config import OIDCSettings

USER_AGENT = "bff/0.1"


def create_idp_client(
    *,
    timeout: float = 10.0,
    ca_bundle: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    wrap_transport: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] | None = None,
    client_cert: tuple[str, str, str | None] | None = None,
) -> httpx.AsyncClient:
    """A shared client for calls to the IdP: TLS verified (optionally against a private CA), no redirects followed
    (a redirected token endpoint is a misconfiguration, not something to chase), bounded timeouts and pool.
    ``wrap_transport`` wraps the transport that makes the calls (tracing).

    ``client_cert`` (certificate file, key file, key passphrase): presented on every TLS connection to the IdP, for
    ``tls_client_auth`` and certificate-bound tokens (RFC 8705 2 and 3)."""
    verify: ssl.SSLContext | bool = True
    if ca_bundle or client_cert:
        verify = ssl.create_default_context(cafile=ca_bundle or None)
        if client_cert is not None:
            verify.load_cert_chain(*client_cert)
    limits = httpx.Limits(max_connections=50, max_keepalive_connections=10)
    if wrap_transport is not None:
        # httpx applies verify and limits to the transport it builds itself; a wrapped one is built here with them.
        transport = wrap_transport(transport or httpx.AsyncHTTPTransport(verify=verify, limits=limits))
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        follow_redirects=False,
        verify=verify,
        headers={"User-Agent": USER_AGENT},
        limits=limits,
        transport=transport,
    )


def idp_client_cert(settings: OIDCSettings) -> tuple[str, str, str | None] | None:
    """``[oidc] client_cert``, ``client_key`` and the key's passphrase, for :func:`create_idp_client`."""
    if not settings.client_cert or not settings.client_key:
        return None
    password = settings.client_key_password
    return settings.client_cert, settings.client_key, password.reveal() if password is not None else None
