"""Request guards against cross-site request forgery, for every state-bearing request from the SPA.

Three independent checks (draft-ietf-oauth-browser-based-apps, "BFF" section; Duende BFF's ``X-CSRF: 1``):

1. A custom header ``X-CSRF: 1``. A cross-origin page cannot add it without a CORS preflight, which bff never
   grants, so its presence proves a same-origin script sent the request.
2. ``Sec-Fetch-Site``, when the browser sends it, must be ``same-origin``.
3. ``Origin``, when present, must be exactly ``public_origin``.

Each failure raises ``CsrfRejected`` (401 ``{"error": "csrf"}``) before any session or upstream work.

``check_navigation`` guards the endpoints a person reaches by a top-level navigation (``GET /bff/logout``): no
``X-CSRF`` header there (a navigation cannot add one), the query carries the proof instead. It accepts
``Sec-Fetch-Site: none`` (the address bar, a bookmark) besides ``same-origin``, and refuses any fetch mode or
destination but a top-level document: a script's ``fetch()`` could read where a redirect led (``Response.url``)
when the target allows CORS, a frame could be framed (Fetch Metadata Request Headers, W3C).
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


#: ``Sec-Fetch-Site`` of a navigation from this origin, or one the user started (address bar, bookmark).
_NAVIGATION_SITES = frozenset({"same-origin", "none"})


def check_navigation(headers: Mapping[str, str], public_origin: str) -> None:
    """A top-level navigation from this origin or from the user; the headers are checked when the browser sends them."""
    site = headers.get("sec-fetch-site")
    if site is not None and site not in _NAVIGATION_SITES:
        raise CsrfRejected(f"cross-site request refused (Sec-Fetch-Site: {site[:20]})")
    mode = headers.get("sec-fetch-mode")
    if mode is not None and mode != "navigate":
        raise CsrfRejected(f"only a top-level navigation may open this URL (Sec-Fetch-Mode: {mode[:20]})")
    dest = headers.get("sec-fetch-dest")
    if dest is not None and dest != "document":
        raise CsrfRejected(f"only a top-level navigation may open this URL (Sec-Fetch-Dest: {dest[:20]})")
    origin = headers.get("origin")
    if origin is not None and origin != public_origin:
        raise CsrfRejected("request from another origin refused")
