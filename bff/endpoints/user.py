"""``GET /bff/user``: who is logged in, for the SPA. Needs ``X-CSRF: 1``. Never returns a token.

``?slide=false`` reads the session without extending its idle timeout (for polling UIs that must not keep an
abandoned tab logged in forever).
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bff.config import Config
from bff.endpoints.common import NO_STORE, SessionCookie
from bff.errors import Unauthenticated
from bff.proxy import check_csrf
from bff.session.manager import SessionManager
from bff.types import PATH_PREFIX, Clock


class User:
    def __init__(self, config: Config, sessions: SessionManager, cookie: SessionCookie, clock: Clock) -> None:
        self.config = config
        self.sessions = sessions
        self.cookie = cookie
        self.clock = clock

    async def handle(self, request: Request) -> Response:
        check_csrf(request.headers, self.config.server.public_origin)
        slide = request.query_params.get("slide", "true").lower() not in ("false", "0", "no")
        current = await self.cookie.current(request, slide=slide)
        if current is None:
            raise Unauthenticated("no session; log in at /bff/login")
        session = current.loaded.session
        now = self.clock()
        idle_expires_at = (
            self.sessions.idle_expires_at(session, now)
            if slide
            else now + (await self.sessions.store.ttl(current.loaded.key) or 0.0)
        )
        body = {
            **session.claims,
            "sub": session.sub,
            "session": {
                "created_at": int(session.created_at),
                "expires_at": int(session.expires_at),
                "idle_expires_at": int(idle_expires_at),
                "access_token_expires_at": None
                if session.tokens.expires_at is None
                else int(session.tokens.expires_at),
            },
            "logout_url": request.scope.get(PATH_PREFIX, "")
            + "/bff/logout?sid="
            + quote(self.sessions.logouts.sid_for(current.session_id), safe=""),
        }
        return JSONResponse(body, headers=NO_STORE)
