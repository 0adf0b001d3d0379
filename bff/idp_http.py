"""The one place where httpx clients for the IdP are configured (discovery, JWKS, token, revocation).

Low-rate control-plane calls use httpx (authlib and respx speak it). The data plane (proxied API calls) has its own
client in ``bff.upstream``.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

import httpx

USER_AGENT = "bff/0.1"


def create_idp_client(
    *,
    timeout: float = 10.0,
    ca_bundle: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    wrap_transport: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] | None = None,
) -> httpx.AsyncClient:
    """A shared client for calls to the IdP: TLS verified (optionally against a private CA), no redirects followed
    (a redirected token endpoint is a misconfiguration, not something to chase), bounded timeouts and pool.
    ``wrap_transport`` wraps the transport that makes the calls (tracing)."""
    verify: ssl.SSLContext | bool = True
    if ca_bundle:
        verify = ssl.create_default_context(cafile=ca_bundle)
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
