"""How the control plane answers an error: JSON for XHR, an HTML page for navigations, cookies of what it ended.

Starlette calls these for a :class:`~bff.errors.BffError` an endpoint raises and for its own ``HTTPException``
(no such endpoint, method not allowed); the error code is recorded on the request's ``Exchange`` for the observers.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from bff.endpoints.common import SessionCookie, html_error, json_error
from bff.endpoints.login import LoginCookies
from bff.errors import BffError, MethodNotAllowed, NotFound, ServiceUnavailable, SessionExpired
from bff.telemetry.exchange import EXCHANGE, Exchange

# The app's lines under one logger name for operators' filters, whichever module writes them.
logger = logging.getLogger("bff.app")

#: Navigations (not XHR) get an HTML error page instead of JSON.
NAVIGATION_PATHS = frozenset({"/bff/login", "/bff/callback"})


class ExceptionHandlers:
    """The control plane's ``exception_handlers``, and the headers every error answer of the app carries."""

    def __init__(self, cookie: SessionCookie, login_cookies: LoginCookies) -> None:
        self.cookie = cookie
        self.login_cookies = login_cookies

    def error_headers(self, exc: BffError) -> list[tuple[bytes, bytes]]:
        """A session that ended (invalid_grant, reuse detected) also loses its cookie."""
        return [self.cookie.clear_header()] if isinstance(exc, SessionExpired) else []

    async def on_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BffError)
        exchange: Exchange | None = request.scope.get(EXCHANGE)
        if exchange is not None:
            exchange.error = exc.error
        if isinstance(exc, ServiceUnavailable):
            logger.warning("%s %s: %s", request.method, request.url.path, exc.message)
        path = request.url.path
        if path in NAVIGATION_PATHS or (path == "/bff/logout" and request.method == "GET"):
            title = "Sign-out failed" if path == "/bff/logout" else "Sign-in failed"
            response: Response = html_error(exc, title=title)
        else:
            response = json_error(exc)
        if isinstance(exc, SessionExpired):
            self.cookie.clear(response)
        if path == "/bff/callback":  # a failed callback ends its login too: its login cookie goes
            self.login_cookies.clear(request, response)
        return response

    @staticmethod
    async def on_http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        error: BffError
        if exc.status_code == 405:
            error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
        else:
            error = NotFound(f"no such endpoint: {request.url.path}")
        exchange: Exchange | None = request.scope.get(EXCHANGE)
        if exchange is not None:
            exchange.error = error.error
        return json_error(error)
