"""Calls to the IdP's JSON documents (discovery, JWKS), with httpx's exceptions translated where they enter.

Every failure here is :class:`~bff.errors.IdPUnavailable`: the IdP timed out, could not be reached, answered an
error status or something that is not a JSON object. Messages name the document and URL (never a credential).

Every call bff makes to the IdP goes through :func:`metered` (here and in ``bff.oidc.client``), timed into
``http_client_request_duration_seconds`` (OpenTelemetry's HTTP client metric) with the IdP's host (never a path or
query), the method, the answer's status (``error`` when none came) and which endpoint (``bff_route``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable
from time import perf_counter
from typing import Literal
from urllib.parse import urlsplit

import httpx

from bff.config.reader import is_loopback_host
from bff.errors import IdPUnavailable
from bff.telemetry import metrics
from bff.types import JSONObject

#: The IdP endpoints bff calls itself (end-session is the browser's navigation; userinfo is not used).
IdPRoute = Literal["idp:token", "idp:jwks", "idp:discovery", "idp:revocation", "idp:par"]
#: RFC 6749 5.2: error codes are %x20-21 / %x23-5B / %x5D-7E; anything else is not shown.
OAUTH_ERROR_CODE = re.compile(r"^[\x20-\x21\x23-\x5b\x5d-\x7e]{1,64}$")
#: ``http_response_status_code`` of a call that got no answer (refused, reset, timed out).
NO_ANSWER = "error"


async def metered(
    route: IdPRoute, method: Literal["GET", "POST"], url: str, call: Awaitable[httpx.Response]
) -> httpx.Response:
    """Await ``call`` (the httpx request ``method url``), timing it until the answer is read, whatever it is."""
    start = perf_counter()
    status = NO_ANSWER
    try:
        response = await call
        status = str(response.status_code)
        return response
    finally:
        metrics.HTTP_CLIENT_DURATION.labels(
            server_address=urlsplit(url).hostname or "",
            http_request_method=method,
            http_response_status_code=status,
            bff_route=route,
        ).observe(perf_counter() - start)


async def get_json_object(
    client: httpx.AsyncClient, url: str, *, what: str, route: Literal["idp:discovery", "idp:jwks"]
) -> JSONObject:
    """GET ``url`` and return its JSON object body; ``what`` names the document in messages."""
    try:
        response = await metered(route, "GET", url, client.get(url, headers={"Accept": "application/json"}))
    except httpx.TimeoutException as exc:
        raise IdPUnavailable(f"{what}: timed out fetching {url}") from exc
    except httpx.HTTPError as exc:
        raise IdPUnavailable(f"{what}: cannot fetch {url} ({type(exc).__name__})") from exc
    if response.status_code != 200:
        # Redirects are not followed (bff.idp_http): a moved document is a misconfiguration to fix, not chase.
        raise IdPUnavailable(f"{what}: {url} answered HTTP {response.status_code}")
    return json_object(response, what=what)


def json_object(response: httpx.Response, *, what: str) -> JSONObject:
    """The body of ``response`` as a JSON object, or IdPUnavailable."""
    try:
        data = json.loads(response.content)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise IdPUnavailable(f"{what}: the answer is not JSON (HTTP {response.status_code})") from exc
    if not isinstance(data, dict):
        raise IdPUnavailable(f"{what}: the answer is not a JSON object (HTTP {response.status_code})")
    return data


def is_secure_url(url: str) -> bool:
    """``https`` with a host, or ``http`` to a loopback host (a local IdP in development and tests)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    if not host or parts.fragment:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(host))
