"""What the endpoints share: the request's session, cookies on responses, JSON errors and the HTML error page."""

from __future__ import annotations

import html
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from bff.config import Config
from bff.cookies import clear_cookie, read_cookie, set_cookie
from bff.errors import BffError
from bff.proxy import error_headers, error_payload
from bff.session.manager import LoadedSession, SessionManager

NO_STORE = {"Cache-Control": "no-store"}


@dataclass(frozen=True)
class CurrentSession:
    session_id: str
    loaded: LoadedSession


class SessionCookie:
    """Reads the session cookie of a request and writes it on responses."""

    def __init__(self, config: Config, sessions: SessionManager) -> None:
        self.name = config.session.cookie_name
        self.same_site = config.session.same_site
        self.max_age = int(config.session.absolute_timeout)
        self.sessions = sessions

    def session_id(self, request: Request) -> str | None:
        return self.sessions.session_id_from_cookie(read_cookie(request.headers.get("cookie"), self.name))

    async def current(self, request: Request, *, slide: bool = True, strict: bool = True) -> CurrentSession | None:
        """The request's live session, or None. A badly signed cookie never reaches the store. ``strict``: a record
        in a format this release does not read raises ``SessionFormatUnsupported`` instead of being None."""
        session_id = self.session_id(request)
        if session_id is None:
            return None
        loaded = await self.sessions.load(session_id, slide=slide, strict=strict)
        return None if loaded is None else CurrentSession(session_id, loaded)

    def set(self, response: Response, session_id: str) -> None:
        response.headers.append(
            "set-cookie",
            set_cookie(
                self.name, self.sessions.cookie_value(session_id), max_age=self.max_age, same_site=self.same_site
            ),
        )

    def clear(self, response: Response) -> None:
        response.headers.append("set-cookie", clear_cookie(self.name, same_site=self.same_site))

    def clear_header(self) -> tuple[bytes, bytes]:
        return b"set-cookie", clear_cookie(self.name, same_site=self.same_site).encode("latin-1")


def _error_headers(exc: BffError) -> dict[str, str]:
    """The data plane's error headers (no-store, and Retry-After when the error has one) as Starlette takes them."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in error_headers(exc)}


def json_error(exc: BffError) -> JSONResponse:
    return JSONResponse(error_payload(exc), status_code=exc.status, headers=_error_headers(exc))


def html_error(exc: BffError, *, title: str = "Sign-in failed") -> HTMLResponse:
    """A plain page for errors a person sees during a top-level navigation (login, callback, logout)."""
    body = (
        f"<!doctype html><html lang=en><meta charset=utf-8><title>{html.escape(title)}</title>"
        "<body style='font-family:sans-serif;max-width:40em;margin:4em auto'>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(exc.message)}</p>"
        f"<p><code>error: {html.escape(exc.error)}</code></p>"
        "<p><a href='/'>Back to the application</a></p></body></html>"
    )
    return HTMLResponse(body, status_code=exc.status, headers=_error_headers(exc))
