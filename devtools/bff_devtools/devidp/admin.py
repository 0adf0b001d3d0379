"""``/admin``: a small console for demos (demo mode only). Plain HTML forms, and the same actions as JSON under
``/admin/api/``.

Access: the IdP session of a user with role ``admin`` (alice by default); without a session the page shows the
login form. Every POST carries the session's synchronizer token: the ``csrf`` form field, or the
``X-CSRF-Token`` header for the JSON API (``GET /admin/api/session`` hands it to a same-origin script; no CORS is
granted, so another origin cannot read it).

Actions:

* list a user's refresh-token families (created, last used, client, state; never a token);
* revoke a family (its access tokens are blocklisted, its client gets a back-channel logout);
* change a user's password (bumps the token version: every family of the user is revoked with back-channel
  logout, every IdP session of the user ends, except the admin's own when they change their own password);
* rotate the signing key.

JSON API: ``GET /admin/api/session``, ``GET /admin/api/users/{username}/families``,
``POST /admin/api/families/{family_id}/revoke``, ``POST /admin/api/users/{username}/password`` (body
``{"password": "..."}``), ``POST /admin/api/keys/rotate``.
"""

from __future__ import annotations

import hmac
import json
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import quote

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from bff_devtools.devidp.accounts import MIN_PASSWORD_LENGTH, Accounts
from bff_devtools.devidp.families import TokenFamilies
from bff_devtools.devidp.keys import KeyRing
from bff_devtools.devidp.login import LoginFlow
from bff_devtools.devidp.oauth import read_form
from bff_devtools.devidp.pages import error_page, hidden, page
from bff_devtools.devidp.records import BrowserSession, Family
from bff_devtools.devidp.sessions import BrowserSessions
from bff_devtools.devidp.settings import DevIdPSettings

CSRF_HEADER = "x-csrf-token"
_NOTICES = {
    "revoked": "The family was revoked; its client got a back-channel logout.",
    "already": "The family was not active any more.",
    "password": "The password was changed; the user's families were revoked and their sessions ended.",
    "weak": f"Not changed: a password needs at least {MIN_PASSWORD_LENGTH} characters.",
    "rotated": "A new signing key signs from now on; the previous one stays published until its tokens expire.",
}


class AdminPages:
    def __init__(
        self,
        settings: DevIdPSettings,
        *,
        sessions: BrowserSessions,
        accounts: Accounts,
        families: TokenFamilies,
        keys: KeyRing,
        login: LoginFlow,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._accounts = accounts
        self._families = families
        self._keys = keys
        self._login = login

    def routes(self) -> list[Route]:
        return [
            Route("/admin", self.page, methods=["GET"]),
            Route("/admin/families/{family_id}/revoke", self.revoke_family, methods=["POST"]),
            Route("/admin/users/{username}/password", self.change_password, methods=["POST"]),
            Route("/admin/keys/rotate", self.rotate_key, methods=["POST"]),
            Route("/admin/api/session", self.api_session, methods=["GET"]),
            Route("/admin/api/users/{username}/families", self.api_families, methods=["GET"]),
            Route("/admin/api/families/{family_id}/revoke", self.revoke_family, methods=["POST"]),
            Route("/admin/api/users/{username}/password", self.change_password, methods=["POST"]),
            Route("/admin/api/keys/rotate", self.rotate_key, methods=["POST"]),
        ]

    # --- pages and actions ----------------------------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        session = await self._sessions.current(request)
        if session is None:
            return await self._login.form(request, params=None, client_id=None)
        if not self._is_admin(session):
            return error_page("The admin page needs a user with role admin.", error="forbidden", status=403)
        username = request.query_params.get("user", "")
        user = self._settings.user(username) or self._settings.users[0]
        families = await self._families.of_user(user.username)
        return page("Admin", self._render(session, user.username, families, request.query_params.get("done")))

    async def revoke_family(self, request: Request) -> Response:
        authorized = await self._authorize_post(request)
        if isinstance(authorized, Response):
            return authorized
        loaded = await self._families.load(request.path_params["family_id"])
        revoked = None if loaded is None else await self._families.revoke(loaded.family.family_id, "admin")
        username = loaded.family.username if loaded is not None else ""
        if _is_api(request):
            return JSONResponse({"revoked": revoked is not None})
        return _back(username, "revoked" if revoked is not None else "already")

    async def change_password(self, request: Request) -> Response:
        authorized = await self._authorize_post(request)
        if isinstance(authorized, Response):
            return authorized
        session, fields = authorized
        username = request.path_params["username"]
        if self._settings.user(username) is None:
            return _not_found(request)
        try:
            version = await self._accounts.change_password(username, str(fields.get("password", "")))
        except ValueError:
            if _is_api(request):
                return JSONResponse({"error": "weak_password"}, status_code=400)
            return _back(username, "weak")
        families = await self._families.of_user(username)
        revoked = await self._families.revoke_many([f.family_id for f in families], "password_changed")
        if session.username == username:
            await self._sessions.keep_after_password_change(session, version)
        if _is_api(request):
            return JSONResponse({"token_version": version, "revoked_families": [f.family_id for f in revoked]})
        return _back(username, "password")

    async def rotate_key(self, request: Request) -> Response:
        authorized = await self._authorize_post(request)
        if isinstance(authorized, Response):
            return authorized
        kid = await anyio.to_thread.run_sync(self._keys.rotate)  # key generation and file writes: off the loop
        if _is_api(request):
            return JSONResponse({"kid": kid})
        return _back("", "rotated")

    async def api_session(self, request: Request) -> Response:
        session = await self._admin_session(request)
        if isinstance(session, Response):
            return session
        body = {"username": session.username, "csrf_token": session.csrf}
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def api_families(self, request: Request) -> Response:
        session = await self._admin_session(request)
        if isinstance(session, Response):
            return session
        username = request.path_params["username"]
        if self._settings.user(username) is None:
            return _not_found(request)
        families = await self._families.of_user(username)
        return JSONResponse({"families": [_family_json(f) for f in families]}, headers={"Cache-Control": "no-store"})

    # --- access ---------------------------------------------------------------------------------------------------

    def _is_admin(self, session: BrowserSession) -> bool:
        user = self._settings.user(session.username)
        return user is not None and user.role == "admin"

    async def _admin_session(self, request: Request) -> BrowserSession | Response:
        session = await self._sessions.current(request)
        if session is None:
            return _refuse(request, "not signed in at the identity provider", "unauthenticated", 401)
        if not self._is_admin(session):
            return _refuse(request, "the admin page needs a user with role admin", "forbidden", 403)
        return session

    async def _authorize_post(self, request: Request) -> tuple[BrowserSession, dict[str, Any]] | Response:
        """An admin session and a matching CSRF token (form field, or header for the API), or the refusal."""
        session = await self._admin_session(request)
        if isinstance(session, Response):
            return session
        if _is_api(request):
            token = request.headers.get(CSRF_HEADER, "")
            try:
                fields = json.loads(await request.body() or b"{}")
            except ValueError:
                fields = None
            if not isinstance(fields, dict):
                return JSONResponse({"error": "bad_request"}, status_code=400)
        else:
            fields = dict(await read_form(request))
            token = str(fields.get("csrf", ""))
        if not token or not hmac.compare_digest(token.encode(), session.csrf.encode()):
            return _refuse(request, "missing or wrong CSRF token", "csrf", 403)
        return session, fields

    # --- rendering ------------------------------------------------------------------------------------------------

    def _render(self, session: BrowserSession, username: str, families: list[Family], done: str | None) -> str:
        csrf = hidden("csrf", session.csrf)
        users = " | ".join(
            f"<a href='/admin?user={quote(u.username)}'>{escape(u.username)}</a> ({escape(u.role)})"
            for u in self._settings.users
        )
        parts = [f"<p>Signed in as <b>{escape(session.username)}</b>. Users: {users}</p>"]
        if done in _NOTICES:
            parts.append(f"<p><b>{escape(_NOTICES[done])}</b></p>")
        parts.append(f"<h2>Refresh-token families of {escape(username)}</h2>")
        if families:
            rows = "".join(self._family_row(f, csrf) for f in families)
            parts.append(
                "<table><tr><th>family</th><th>client</th><th>created (UTC)</th><th>last used (UTC)</th>"
                f"<th>rotations</th><th>state</th><th></th></tr>{rows}</table>"
            )
        else:
            parts.append("<p class=muted>None.</p>")
        parts.append(
            f"<h2>Change the password of {escape(username)}</h2>"
            f"<form method=post action='/admin/users/{quote(username)}/password'>{csrf}"
            "<label>New password <input type=password name=password autocomplete=new-password required></label>"
            "<button type=submit>Change password</button></form>"
        )
        jwks = self._keys.jwks()["keys"]
        kids = "".join(f"<li><code>{escape(str(k.get('kid')))}</code> {escape(str(k.get('alg')))}</li>" for k in jwks)
        parts.append(
            f"<h2>Signing keys</h2><p>Published (the first one signs):</p><ul>{kids}</ul>"
            f"<form method=post action='/admin/keys/rotate'>{csrf}<button type=submit>Rotate the signing key</button>"
            "</form>"
        )
        return "".join(parts)

    @staticmethod
    def _family_row(family: Family, csrf: str) -> str:
        state = family.state if family.revoked_reason is None else f"{family.state} ({family.revoked_reason})"
        action = ""
        if family.state == "active":
            action = (
                f"<form class=inline method=post action='/admin/families/{quote(family.family_id)}/revoke'>"
                f"{csrf}<button type=submit>Revoke</button></form>"
            )
        cells = [family.family_id, family.client_id, _utc(family.created_at), _utc(family.last_used_at)]
        return (
            "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells)
            + f"<td>{family.rotations}</td><td>{escape(state)}</td><td>{action}</td></tr>"
        )  # fmt: skip


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/admin/api/")


def _refuse(request: Request, message: str, error: str, status: int) -> Response:
    if _is_api(request):
        return JSONResponse({"error": error}, status_code=status)
    return error_page(message[:1].upper() + message[1:] + ".", error=error, status=status)


def _not_found(request: Request) -> Response:
    return _refuse(request, "no such user", "not_found", 404)


def _back(username: str, notice: str) -> Response:
    """Post/Redirect/Get: back to the page, with a notice chosen from a fixed list (nothing reflected)."""
    user = f"user={quote(username)}&" if username else ""
    return RedirectResponse(f"/admin?{user}done={notice}", status_code=303)


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _family_json(family: Family) -> dict[str, Any]:
    return {
        "family_id": family.family_id,
        "client_id": family.client_id,
        "sid": family.sid,
        "created_at": family.created_at,
        "last_used_at": family.last_used_at,
        "rotations": family.rotations,
        "state": family.state,
        "revoked_reason": family.revoked_reason,
    }
