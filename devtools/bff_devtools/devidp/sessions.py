"""The IdP's own browser sessions: single sign-on across clients, ended by ``/end_session``.

Cookies (``HttpOnly``, ``SameSite=Lax`` so they ride along the cross-site top-level navigation that brings a
browser to ``/authorize``; ``Secure`` when the issuer is https):

* ``devidp_session = sid.secret``: the session. The store keeps the secret's hash under the ``sid``, so the public
  ``sid`` (it is in every ID token) alone is useless, and a store dump yields no cookie.
* ``devidp_browser``: a random id that binds a login form to the browser it was shown to (login CSRF).

A session records the user's token version at login; after a change of password, older sessions are dead.
Ending a session (RP-initiated logout) revokes the refresh-token families issued in it and sends a back-channel
logout to every client that received tokens in it (Back-Channel Logout 1.0 section 2: the OP notifies "each RP
... with which the End-User has a session").
"""

from __future__ import annotations

import dataclasses
import secrets

from starlette.requests import Request
from starlette.responses import Response

from bff.session.store import SessionStore
from bff.types import Clock
from bff_devtools.acr import ACR_PWD
from bff_devtools.devidp.accounts import Accounts
from bff_devtools.devidp.backchannel import BackchannelNotifier, LogoutTarget
from bff_devtools.devidp.families import TokenFamilies
from bff_devtools.devidp.records import (
    BrowserSession,
    is_random_id,
    secret_hash,
    session_key,
)
from bff_devtools.devidp.settings import DemoUser, DevIdPSettings

SESSION_COOKIE = "devidp_session"
BROWSER_COOKIE = "devidp_browser"
_MAX_COOKIE = 256


class BrowserSessions:
    def __init__(
        self,
        store: SessionStore,
        settings: DevIdPSettings,
        *,
        accounts: Accounts,
        families: TokenFamilies,
        notifier: BackchannelNotifier,
        clock: Clock,
    ) -> None:
        self._store = store
        self._settings = settings
        self._accounts = accounts
        self._families = families
        self._notifier = notifier
        self._clock = clock

    # --- sessions -------------------------------------------------------------------------------------------------

    async def create(self, user: DemoUser, *, acr: str = ACR_PWD) -> tuple[BrowserSession, str]:
        """A new session for ``user`` (just authenticated, at level ``acr``) and the cookie value that names it."""
        secret = secrets.token_urlsafe(32)
        session = BrowserSession(
            sid=secrets.token_urlsafe(16),
            username=user.username,
            auth_time=int(self._clock()),
            secret_hash=secret_hash(secret),
            csrf=secrets.token_urlsafe(32),
            user_version=await self._accounts.version(user.username),
            acr=acr,
        )
        await self._store.set(session_key(session.sid), session.to_bytes(), self._settings.session_ttl)
        return session, f"{session.sid}.{secret}"

    async def current(self, request: Request) -> BrowserSession | None:
        """The live session named by the request's cookie, or None."""
        value = request.cookies.get(SESSION_COOKIE, "")
        sid, _, secret = value.partition(".")
        if not is_random_id(sid) or not secret or len(value) > _MAX_COOKIE:
            return None
        raw = await self._store.get(session_key(sid))
        if raw is None:
            return None
        session = BrowserSession.from_bytes(raw)
        if not secrets.compare_digest(session.secret_hash, secret_hash(secret)):
            return None
        if session.user_version != await self._accounts.version(session.username):
            return None  # the password changed since this login
        return session

    async def keep_after_password_change(self, session: BrowserSession, version: int) -> None:
        """Re-stamp ``session`` with the user's new token version (an admin changing their own password stays
        logged in on the page where they did it)."""
        remaining = await self._store.ttl(session_key(session.sid))
        if remaining is not None:
            renewed = dataclasses.replace(session, user_version=version)
            await self._store.set(session_key(session.sid), renewed.to_bytes(), remaining)

    async def add_client(self, sid: str, client_id: str) -> None:
        """Remember that ``client_id`` received tokens in session ``sid`` (it gets the back-channel logout)."""
        await self._store.index_add(session_key(sid, "clients"), client_id, self._settings.session_ttl)

    async def end(self, sid: str, *, sub: str | None = None) -> BrowserSession | None:
        """End the session ``sid``: delete it, revoke its families, and notify its clients over the back channel.
        ``sub`` (from the ID token hint) names the user when the session itself has expired already."""
        raw = await self._store.take(session_key(sid))
        session = None if raw is None else BrowserSession.from_bytes(raw)
        if session is not None and (user := self._settings.user(session.username)) is not None:
            sub = user.sub
        families = await self._families.of_session(sid)
        revoked = await self._families.revoke_many([f.family_id for f in families], "logout", notify=False)
        clients = await self._store.index_members(session_key(sid, "clients"))
        await self._store.delete(session_key(sid, "clients"))
        await self._store.delete(session_key(sid, "families"))
        targets = [LogoutTarget(f.client_id, f.sub, sid) for f in revoked]
        if sub is not None:
            targets.extend(LogoutTarget(client_id, sub, sid) for client_id in clients)
        await self._notifier.notify(targets)
        return session

    # --- cookies --------------------------------------------------------------------------------------------------

    def set_session_cookie(self, response: Response, value: str) -> None:
        self._set(response, SESSION_COOKIE, value, int(self._settings.session_ttl))

    def clear_session_cookie(self, response: Response) -> None:
        self._set(response, SESSION_COOKIE, "", 0)

    def browser_id(self, request: Request) -> str | None:
        value = request.cookies.get(BROWSER_COOKIE)
        return value if value and len(value) <= _MAX_COOKIE else None

    def set_browser_cookie(self, response: Response, value: str) -> None:
        self._set(response, BROWSER_COOKIE, value, int(self._settings.session_ttl))

    def _set(self, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name, value, max_age=max_age, path="/", secure=self._settings.secure_cookies, httponly=True, samesite="lax"
        )
