"""``Rotation``: what one refresh grant makes of a session's tokens, for the single-flight core
(``bff.tokens.refresh``), which holds the session's lock and stores the outcome.

* The login's tokens (``login_tokens``): taken from the refresh result a previous refresh left when its session
  write did not land (``remembered``), or fetched with the refresh grant through the ``Spender``. The new refresh
  token replaces the old one atomically with the new access token (RFC 6749 6), and a new ID token must be about
  the same user (OpenID Connect Core 12.2): a check that may fetch the IdP's keys, so it runs in the task of the
  write that stores the tokens (``Spender.store_rotated``), where a cancellation of the flight cannot lose them.
  When that check cannot finish (the IdP's keys do not answer), the tokens are kept unchecked and ``remembered``
  checks them at the next refresh: the IdP has spent the old refresh token.
* A route's own token (``route_session``: RFC 8707 ``resource``, ``scopes``), from the login's refresh token. Its
  caller first adopts a refresh result that token left (``remembered``), so that the route's refresh presents the
  new refresh token, never the spent one (RFC 9700 4.14.2).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Awaitable, Callable

from bff.config import RouteSettings
from bff.errors import InvalidIdToken, SessionExpired, SubjectChanged
from bff.models import Session, TokenSet
from bff.session.manager import LoadedSession
from bff.tokens.flight import Attempt, FlightContext
from bff.tokens.spending import Spender

#: What new tokens must pass before they are stored; run by the write that stores them.
Check = Callable[[], Awaitable[None]]


class Rotation:
    def __init__(self, context: FlightContext, spender: Spender) -> None:
        self.context = context
        self._spender = spender

    async def remembered(self, current: LoadedSession, attempt: Attempt) -> TokenSet | None:
        """The login's tokens a previous refresh got for the session's refresh token and stored as its result,
        when its session write did not land; None when there is none. Tokens kept unchecked (their ID token's check
        could not finish: the IdP's keys did not answer) are checked first, as ``_check_same_user``."""
        spent = current.session.tokens.refresh_token
        assert spent is not None
        sessions = self.context.sessions
        result = await sessions.load_refresh_result(spent)
        if result is not None:
            return result
        unchecked = await sessions.load_unchecked_refresh_result(spent)
        if unchecked is None or unchecked.id_token is None:
            return None
        await self._check_same_user(current, unchecked.id_token, unchecked.access_token, attempt)
        return unchecked

    async def login_tokens(self, current: LoadedSession, attempt: Attempt) -> tuple[TokenSet, Check | None]:
        """The login's tokens, refreshed (or taken from a refresh result whose session write did not land), and the
        check they must pass first (None: nothing to check); the caller stores them, with the refresh result, running
        the check in the write's task (``Spender.store_rotated``)."""
        tokens = current.session.tokens
        spent = tokens.refresh_token
        assert spent is not None
        remembered = await self.remembered(current, attempt)
        if remembered is not None:
            new = remembered  # a previous refresh spent this token but its write did not land; reuse its result
            attempt.joined = True
        else:
            new = await self._spender.spend(current, spent, None, attempt)
        # A new ID token must be about the same user; a remembered result was checked (before it was saved, or by
        # ``remembered``).
        check = None
        if new.id_token is not None and remembered is None:
            check = functools.partial(self._check_same_user, current, new.id_token, new.access_token, attempt)
        # Rotation: the new refresh token replaces the old one atomically with the new access token; the old one is
        # kept when the IdP did not rotate it (RFC 6749 6).
        return dataclasses.replace(
            new,
            refresh_token=new.refresh_token or spent,
            refresh_expires_at=new.refresh_expires_at if new.refresh_token else tokens.refresh_expires_at,
            id_token=new.id_token or tokens.id_token,
            scope=new.scope or tokens.scope,
        ), check

    async def route_session(
        self, current: LoadedSession, route: RouteSettings | None, route_key: str, attempt: Attempt
    ) -> Session:
        """The session with a token of the route's own (RFC 8707 ``resource``, ``scopes``) from the login's refresh
        token, which the IdP rotates."""
        session = current.session
        tokens = session.tokens
        spent = tokens.refresh_token
        assert spent is not None
        new = await self._spender.spend(current, spent, route, attempt)
        route_token = TokenSet(
            access_token=new.access_token, token_type=new.token_type, expires_at=new.expires_at, scope=new.scope
        )
        return session.evolve(
            tokens=dataclasses.replace(
                tokens,
                refresh_token=new.refresh_token or spent,
                refresh_expires_at=new.refresh_expires_at if new.refresh_token else tokens.refresh_expires_at,
            ),
            route_tokens={**session.route_tokens, route_key: route_token},
        )

    async def _check_same_user(
        self, current: LoadedSession, id_token: str, access_token: str, attempt: Attempt
    ) -> None:
        """OpenID Connect Core 12.2: a refreshed ID token is validated like the first (audiences, ``at_hash``
        against the refreshed access token) and its ``sub`` must be the session's; otherwise the session is not
        this user's any more and ends."""
        sessions = self.context.sessions
        try:
            claims = await self.context.idp.validate_id_token(id_token, nonce=None, access_token=access_token)
        except InvalidIdToken as exc:
            await sessions.delete(current, reason="refresh_failed")
            raise SessionExpired("the refreshed ID token is invalid") from exc
        if claims.get("sub") != current.session.sub:
            attempt.failure = "sub_mismatch"
            await sessions.delete(current, reason="refresh_failed")
            raise SubjectChanged("the refreshed ID token names another user")
