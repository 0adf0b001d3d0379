"""Request guards against cross-site request forgery, for every state-bearing request from the SPA.

Three independent checks (draft-ietf-oauth-browser-based-apps, "BFF" section; Duende BFF's ``X-CSRF: 1``):

1. A custom header ``X-CSRF: 1``. A cross-origin page cannot add it without a CORS preflight, which bff never
   grants, so its presence proves a same-origin script sent the request.
2. ``Sec-Fetch-Site``, when the browser sends it, must be ``same-origin``.
3. ``Origin``, when present, must be exactly ``public_origin``.

Each failure raises ``CsrfRejected`` (401 ``{"error": "csrf"}``) before any session or upstream work.
"""

from __future__ import annotations

from collections.abc import Mapping

from bff.errors import CsrfRejected

CSRF_HEADER = "x-csrf"


def check_csrf(headers: Mapping[str, str], public_origin: str) -> None:
    """``headers`` maps lower-case header names to values."""
    if headers.get(CSRF_HEADER) != "1":
        raise CsrfRejected("missing anti-CSRF header X-CSRF: 1")
    check_same_origin(headers, public_origin)


def check_same_origin(headers: Mapping[str, str], public_origin: str) -> None:
    site = headers.get("sec-fetch-site")
    if site is not None and site != "same-origin":
        raise CsrfRejected(f"cross-site request refused (Sec-Fetch-Site: {site[:20]})")
    origin = headers.get("origin")
    if origin is not None and origin != public_origin:
        raise CsrfRejected("request from another origin refused")
