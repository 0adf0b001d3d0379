"""One HTTP call of a doctor check: an answer, or a short sentence saying why there is none.

The client comes from ``bff.idp_http`` (TLS verified, no redirects followed, bounded timeouts), so a hung peer is a
failed check within the timeout, never a hang. Bodies are read up to :data:`MAX_BODY`: a hostile peer cannot make
the doctor hold a large answer.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from bff.idp_http import create_idp_client

MAX_BODY = 1024 * 1024


@dataclass(frozen=True)
class Answer:
    """What came back: the status, the headers (every field, in order) and at most :data:`MAX_BODY` of the body."""

    url: str
    status: int
    headers: httpx.Headers
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass(frozen=True)
class NoAnswer:
    """Why no answer came; ``tls`` when the TLS handshake failed (certificate, hostname, protocol)."""

    url: str
    reason: str
    tls: bool = False


def client(
    timeout: float, ca_bundle: str | None = None, client_cert: tuple[str, str, str | None] | None = None
) -> httpx.AsyncClient:
    """``client_cert``: presented on every TLS connection, as bff's IdP client does (RFC 8705 2)."""
    return create_idp_client(timeout=timeout, ca_bundle=ca_bundle, client_cert=client_cert)


async def call(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    data: Mapping[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    shown: str | None = None,
) -> Answer | NoAnswer:
    """``shown``: how messages name ``url`` (e.g. without a query that carries a request object)."""
    shown = url if shown is None else shown
    try:
        async with http.stream(method, url, headers=headers, data=data, auth=auth or httpx.USE_CLIENT_DEFAULT) as r:
            body = b""
            async for chunk in r.aiter_bytes():
                body += chunk
                if len(body) >= MAX_BODY:
                    break
            return Answer(url, r.status_code, r.headers, body[:MAX_BODY])
    except (httpx.InvalidURL, ValueError) as exc:
        return NoAnswer(shown, f"cannot call {shown[:200]!r}: not a usable URL ({str(exc)[:100]})")
    except httpx.TimeoutException:
        return NoAnswer(shown, f"no answer from {shown} within the timeout")
    except httpx.HTTPError as exc:
        verify = _tls_failure(exc)
        if verify is not None:
            return NoAnswer(shown, f"TLS handshake with {shown} failed: {verify}", tls=True)
        return NoAnswer(shown, f"cannot reach {shown} ({type(exc).__name__}: {str(exc)[:200] or 'no detail'})")


def _tls_failure(exc: BaseException) -> str | None:
    """The certificate or handshake problem behind ``exc``, when there is one."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen.verify_message or str(seen)
        if isinstance(seen, ssl.SSLError):
            return seen.reason or str(seen)
        seen = seen.__cause__ or seen.__context__
    return None
