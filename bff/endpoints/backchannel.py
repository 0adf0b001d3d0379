"""``POST /bff/backchannel-logout``: the IdP ends sessions server to server (OpenID Connect Back-Channel Logout 1.0).

The IdP posts ``logout_token=...`` form-encoded (section 2.5). No cookie and no CSRF header: the caller is the IdP,
and the signed logout token is the only credential. In order:

1. the body is ``application/x-www-form-urlencoded``, at most ``MAX_BODY`` bytes (else 413), with exactly one
   ``logout_token`` (else 400 ``bad_request``);
2. the token is validated (section 2.6: signature against the JWKS with the algorithm allow-list, ``iss``, ``aud``
   without an audience the client does not trust, ``iat``/``exp``, ``jti``, the back-channel ``events`` member, no
   ``nonce``, ``sid`` and/or ``sub``); any failure is 400 ``invalid_logout_token`` and nothing is deleted or
   remembered, so a forged token cannot burn the ``jti`` of a real one. The endpoint is public, so an unknown
   ``kid`` here refetches the JWKS only within the cache's rate limit, a budget logins never depend on;
3. its ``jti`` is claimed in the store (section 2.6 step 7): a ``jti`` whose logout already completed is a replay,
   400 and nothing deleted. The claim expires when the token would (``exp``, else ``iat`` + the ``max_age`` that
   validation enforces, plus the clock-skew leeway), so the blocklist never grows past the tokens in flight. A claim
   is "pending" until the sessions are gone and "done" after: if the store fails halfway (503), the IdP's retry of
   the same token is still honoured instead of being mistaken for a replay;
4. the sessions go (section 2.7): those of the IdP session ``sid``; with ``sub`` only, every session of the user;
   with both, the ``sid``'s sessions that belong to ``sub``. Sessions are found through the indexes, never by
   scanning, and deleted by store key;
5. the answer is 200 with ``Cache-Control: no-store`` (section 2.8), also when no session matched.

A logout racing a refresh does not bring the session back: refresh writes are compare-and-set
(``SessionManager.replace``) against the bytes the refresh read, and a compare-and-set on a deleted (absent) key
fails, so the refresh ends with ``SessionExpired`` instead of writing the record again. The store being down is
503 (``SessionStoreUnavailable``); the IdP retries.
"""

from __future__ import annotations

import inspect
import logging
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from bff.config import Config
from bff.endpoints.common import NO_STORE
from bff.errors import BadRequest, InvalidLogoutToken, PayloadTooLarge, SessionFormatUnsupported
from bff.oidc.id_token import validate_logout_token
from bff.oidc.provider import IdentityProvider
from bff.session.manager import SessionManager
from bff.types import JSONObject

logger = logging.getLogger("bff.logout")

#: A logout token is a JWT of a few KiB at most; anything much larger is not a logout request.
MAX_BODY = 64 * 1024
FORM = "application/x-www-form-urlencoded"
#: How long after its ``iat`` a logout token without ``exp`` is accepted: ``validate_logout_token``'s own bound
#: (read from its signature, so the blocklist cannot forget a jti while validation would still take the token).
MAX_AGE = float(inspect.signature(validate_logout_token).parameters["max_age"].default)


class BackchannelLogout:
    def __init__(self, config: Config, sessions: SessionManager, idp: IdentityProvider) -> None:
        self.sessions = sessions
        self.idp = idp
        self.leeway = config.oidc.clock_skew

    async def handle(self, request: Request) -> Response:
        token = await self._logout_token(request)
        claims = await self.idp.validate_logout_token(token)
        issuer, jti = str(claims["iss"]), str(claims["jti"])
        until = self._acceptable_until(claims)
        if not await self.sessions.logouts.begin_token(issuer, jti, until):
            raise InvalidLogoutToken("logout_token was already used (jti replay)")
        sid = _string_or_none(claims.get("sid"))
        sub = _string_or_none(claims.get("sub"))
        ended = await self._end_sessions(sid=sid, sub=sub)
        await self.sessions.logouts.finish_token(issuer, jti, until)
        logger.info("back-channel logout ended %d session(s) (by %s)", ended, "sid" if sid else "sub")
        return Response(status_code=200, headers=NO_STORE)

    async def _logout_token(self, request: Request) -> str:
        content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if content_type != FORM:
            raise BadRequest(f"the logout request must be {FORM} (Back-Channel Logout 1.0 section 2.5)")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY:  # refuse before reading
            raise PayloadTooLarge(f"the logout request body exceeds {MAX_BODY} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise PayloadTooLarge(f"the logout request body exceeds {MAX_BODY} bytes")
        try:
            fields = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=32, errors="strict")
        except ValueError as exc:  # UnicodeDecodeError is a ValueError
            raise BadRequest("the logout request body is not a valid form") from exc
        tokens = [value for name, value in fields if name == "logout_token"]
        if not tokens or not tokens[0]:
            raise BadRequest("the logout request has no logout_token parameter")
        if len(tokens) > 1:  # RFC 6749 3.1: a parameter must not appear more than once
            raise BadRequest("the logout request has more than one logout_token parameter")
        return tokens[0]

    def _acceptable_until(self, claims: JSONObject) -> float:
        """When validation would stop accepting this token: until then its ``jti`` must be remembered."""
        exp = claims.get("exp")
        if exp is not None:
            return float(exp) + self.leeway
        return float(claims["iat"]) + MAX_AGE + self.leeway

    async def _end_sessions(self, *, sid: str | None, sub: str | None) -> int:
        """Delete the matching sessions (section 2.7); returns how many. A record that expired meanwhile or cannot
        be decrypted is skipped: it is unusable already. One in a store format of a newer release is deleted: the
        instances of that release still serve it (docs/storage-formats.md)."""
        if sid is not None:
            keys = await self.sessions.keys_for_sid(sid)
        elif sub is not None:
            keys = await self.sessions.keys_for_sub(sub)
        else:  # pragma: no cover - validate_logout_token refuses a token with neither
            raise InvalidLogoutToken("logout_token has neither sid nor sub")
        ended = 0
        for key in keys:
            try:
                loaded = await self.sessions.load_key(key, strict=True)
            except SessionFormatUnsupported:
                # Listed under this IdP session or user by the login that wrote it; its sub cannot be compared.
                if await self.sessions.store.delete(key):
                    ended += 1
                continue
            if loaded is None:
                continue
            if sub is not None and loaded.session.sub != sub:
                continue  # both given: the IdP session of that user only
            await self.sessions.delete(loaded, reason="backchannel")
            ended += 1
        return ended


def _string_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
