"""Pushed authorization requests (RFC 9126): the login's authorization parameters go to the IdP over the back
channel, authenticated as the token endpoint's calls are, and the browser carries only ``client_id`` and the
``request_uri`` the IdP answers with (RFC 9126 4).

The answer is hostile input (RFC 9126 2.2): only a ``201`` whose body (at most :data:`MAX_ANSWER` bytes) is a JSON
object with a ``request_uri`` string of at most :data:`MAX_REQUEST_URI` visible ASCII characters and a positive
integer ``expires_in`` is used. Anything else fails the login with :class:`~bff.errors.PushedAuthorizationFailed`
(502 ``idp_par_failed``), or :class:`~bff.errors.IdPUnavailable` (503) when the IdP is down, slow or answers 5xx or
429. Nothing is stored before the push succeeds, so a failed push loses nothing.

With DPoP on, the push carries a DPoP proof (RFC 9449 10.1), so the IdP binds the authorization code to bff's key.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bff.errors import IdPUnavailable, PushedAuthorizationFailed
from bff.oidc._http import OAUTH_ERROR_CODE
from bff.oidc.client_auth import ClientAuth

logger = logging.getLogger(__name__)

#: Longest ``request_uri`` accepted: it travels in the browser's URL, which must stay short.
MAX_REQUEST_URI = 2048
#: Longest answer read as JSON; a PAR answer is two short fields.
MAX_ANSWER = 16 * 1024
#: Visible ASCII only (RFC 3986 URI characters are a subset): no control characters, no spaces.
_REQUEST_URI = re.compile(rf"[\x21-\x7e]{{1,{MAX_REQUEST_URI}}}")
WHAT = "PAR endpoint"


@dataclass(frozen=True)
class PushedRequest:
    """RFC 9126 2.2: what the browser is sent to the authorization endpoint with."""

    request_uri: str
    expires_in: int


class PushedAuthorization:
    """Pushes authorization requests to one IdP's PAR endpoint (its mTLS alias when bff presents a certificate)."""

    def __init__(self, auth: ClientAuth, endpoint: str, *, dpop: bool) -> None:
        self._auth = auth
        self.endpoint = endpoint
        self._dpop = dpop

    async def push(self, params: Mapping[str, str]) -> PushedRequest:
        """RFC 9126 2.1: POST the authorization parameters with client authentication; the checked answer."""
        response = await self._auth.post(self.endpoint, dict(params), what=WHAT, route="idp:par", dpop=self._dpop)
        status = response.status_code
        if status == 429 or status >= 500:
            raise IdPUnavailable(f"{WHAT}: HTTP {status}")
        if status in (400, 401, 403):
            code = _oauth_error(response.content)
            logger.info("%s refused the authorization request: %s (HTTP %d)", WHAT, code, status)
            raise PushedAuthorizationFailed(f"{WHAT}: refused the authorization request ({code})", oauth_error=code)
        if status != 201:
            raise PushedAuthorizationFailed(f"{WHAT}: unexpected HTTP {status} (RFC 9126 2.2 answers 201)")
        return _pushed_request(response.content)


def _json_object(body: bytes) -> dict[str, Any] | None:
    if len(body) > MAX_ANSWER:
        return None
    try:
        data = json.loads(body)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return None
    return data if isinstance(data, dict) else None


def _oauth_error(body: bytes) -> str:
    """The answer's RFC 6749 5.2 ``error`` code when it is a valid one, else ``invalid_answer``."""
    data = _json_object(body)
    code = None if data is None else data.get("error")
    return code if isinstance(code, str) and OAUTH_ERROR_CODE.fullmatch(code) else "invalid_answer"


def _pushed_request(body: bytes) -> PushedRequest:
    data = _json_object(body)
    if data is None:
        raise PushedAuthorizationFailed(f"{WHAT}: the answer is not a JSON object of at most {MAX_ANSWER} bytes")
    request_uri = data.get("request_uri")
    if not isinstance(request_uri, str) or not _REQUEST_URI.fullmatch(request_uri):
        raise PushedAuthorizationFailed(
            f"{WHAT}: request_uri is not a string of 1 to {MAX_REQUEST_URI} visible ASCII characters"
        )
    expires_in = data.get("expires_in")
    if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in <= 0:
        raise PushedAuthorizationFailed(f"{WHAT}: expires_in is not a positive integer")
    return PushedRequest(request_uri=request_uri, expires_in=expires_in)
