"""What the token and revocation endpoints do once authlib has checked a request: issue, rotate, revoke.

Free of authlib, and async (it talks to the store): the grants in ``grants`` call in here from authlib's
synchronous hooks through ``oauth.wait``. :class:`IdPServices` bundles the services those hooks reach.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, Protocol

from bff.types import Clock, JSONObject
from bff_devtools.acr import ACR_PWD
from bff_devtools.devidp.accounts import Accounts
from bff_devtools.devidp.families import LoadedFamily, TokenFamilies
from bff_devtools.devidp.keys import KeyRing
from bff_devtools.devidp.minter import ACCESS_TOKEN_TYP, TokenMinter
from bff_devtools.devidp.records import Family
from bff_devtools.devidp.sessions import BrowserSessions
from bff_devtools.devidp.settings import DemoUser, DevIdPSettings
from bff_devtools.devidp.storage import AuthorizationCodes, Blocklist

logger = logging.getLogger("bff_devtools.devidp.issuer")

#: RFC 8693 3: the token type identifier of an OAuth 2.0 access token.
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a type URI, not a password


@dataclass(frozen=True)
class Subject:
    """The resource owner of a grant, as authlib carries it in ``request.user``: the user and the IdP session
    (``sid`` and ``auth_time`` go into the ID token)."""

    user: DemoUser
    sid: str
    auth_time: int
    acr: str = ACR_PWD


class HasClientId(Protocol):
    @property
    def client_id(self) -> str: ...


@dataclass(frozen=True)
class RevocableToken:
    """A token presented to ``/revoke`` that this IdP issued (RFC 7009 2.1)."""

    kind: Literal["access_token", "refresh_token"]
    client_id: str
    family_id: str | None = None
    jti: str | None = None
    exp: int = 0

    def check_client(self, client: HasClientId) -> bool:
        """RFC 7009 2.1: a client may only revoke its own tokens."""
        return self.client_id == client.client_id


class TokenIssuer:
    def __init__(
        self,
        settings: DevIdPSettings,
        *,
        minter: TokenMinter,
        families: TokenFamilies,
        sessions: BrowserSessions,
        accounts: Accounts,
        blocklist: Blocklist,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._minter = minter
        self._families = families
        self._sessions = sessions
        self._accounts = accounts
        self._blocklist = blocklist
        self._clock = clock

    # --- issuing --------------------------------------------------------------------------------------------------

    async def for_code(
        self,
        *,
        client_id: str,
        subject: Subject,
        scope: str,
        audience: str,
        with_refresh_token: bool,
        binding: str | None = None,
        jkt: str | None = None,
    ) -> JSONObject:
        """The answer to a redeemed authorization code: a new refresh-token family when the client may refresh."""
        family_id = refresh_token = None
        if with_refresh_token:
            family, refresh_token = await self._families.create(
                client_id=client_id,
                user=subject.user,
                sid=subject.sid,
                scope=scope,
                auth_time=subject.auth_time,
                user_version=await self._accounts.version(subject.user.username),
                acr=subject.acr,
            )
            family_id = family.family_id
        await self._sessions.add_client(subject.sid, client_id)
        return await self._answer(
            client_id,
            subject.user,
            scope,
            audience,
            family_id,
            refresh_token,
            binding,
            jkt,
            acr=subject.acr,
            auth_time=subject.auth_time,
        )

    async def redeem(self, refresh_token: str) -> LoadedFamily | None:
        """The family a refresh token may be used for: active, current token (else reuse), and issued under the
        user's current token version (else the password changed since: revoked now, if an index missed it)."""
        loaded = await self._families.redeem(refresh_token)
        if loaded is None:
            return None
        family = loaded.family
        if family.user_version != await self._accounts.version(family.username):
            await self._families.revoke(family.family_id, "password_changed")
            return None
        return loaded

    async def for_refresh(
        self,
        loaded: LoadedFamily,
        *,
        scope: str,
        audience: str,
        binding: str | None = None,
        jkt: str | None = None,
    ) -> JSONObject | None:
        """Rotate the family and answer with the new refresh token; None when the rotation lost a race."""
        user = self._accounts.user(loaded.family.username)
        if user is None:  # pragma: no cover - authlib refuses the grant earlier (authenticate_user found no user)
            return None
        refresh_token = await self._families.rotate(loaded)
        if refresh_token is None:
            return None
        family = loaded.family
        return await self._answer(
            family.client_id,
            user,
            scope,
            audience,
            family.family_id,
            refresh_token,
            binding,
            jkt,
            acr=family.acr,
            auth_time=family.auth_time,
        )

    async def for_client(
        self, *, client_id: str, scope: str, audience: str, binding: str | None = None, jkt: str | None = None
    ) -> JSONObject:
        """Client credentials (RFC 6749 4.4): the client is the subject; no refresh token (4.4.3)."""
        return await self._answer(client_id, None, scope, audience, None, None, binding, jkt)

    async def for_exchange(
        self, *, client_id: str, subject_token: str, scope: str | None, audience: str
    ) -> JSONObject | None:
        """RFC 8693 2.2.1: a token for ``audience`` on behalf of the subject of ``subject_token``, an access token
        this IdP issued to the same client, unexpired and not revoked; None when it is not. ``scope`` None: the
        subject token's scope. No refresh token: the client exchanges again when it needs a new one."""
        claims = self._minter.verify(subject_token, typ=ACCESS_TOKEN_TYP)
        if claims is None or claims.get("client_id") != client_id or int(claims.get("exp", 0)) <= self._clock():
            return None
        if await self._blocklist.contains(str(claims["jti"])):
            return None
        user = self._settings.user_by_sub(str(claims.get("sub")))
        if user is None:
            return None
        granted = str(claims.get("scope", "")) if scope is None else scope
        acr, auth_time = claims.get("acr"), claims.get("auth_time")  # the exchanged token keeps the login's level
        answer = await self._answer(
            client_id,
            user,
            granted,
            audience,
            None,
            None,
            acr=acr if isinstance(acr, str) else None,
            auth_time=auth_time if isinstance(auth_time, int) else None,
        )
        answer["issued_token_type"] = ACCESS_TOKEN_TYPE
        return answer

    def subject_of(self, family: Family) -> Subject | None:
        user = self._accounts.user(family.username)
        return None if user is None else Subject(user, family.sid, family.auth_time, family.acr)

    async def _answer(
        self,
        client_id: str,
        user: DemoUser | None,
        scope: str,
        audience: str,
        family_id: str | None,
        refresh_token: str | None,
        binding: str | None = None,
        jkt: str | None = None,
        *,
        acr: str | None = None,
        auth_time: int | None = None,
    ) -> JSONObject:
        access = self._minter.access_token(
            jkt=jkt,
            acr=acr,
            auth_time=auth_time,
            client_id=client_id,
            sub=user.sub if user is not None else client_id,
            scope=scope,
            audience=audience,
            role=user.role if user is not None else None,
            binding=binding,
        )
        if family_id is not None:
            await self._families.record_access_token(family_id, access.jti, access.exp)
        answer: JSONObject = {
            "access_token": access.token,
            "token_type": "Bearer" if jkt is None else "DPoP",  # RFC 9449 5: a bound token is of type DPoP
            "expires_in": int(self._settings.access_token_ttl),
            "scope": scope,
        }
        if refresh_token is not None:
            answer["refresh_token"] = refresh_token
        return answer

    # --- revocation (RFC 7009) ------------------------------------------------------------------------------------

    async def find_revocable(self, token: str, hint: str | None) -> RevocableToken | None:
        """The token if this IdP issued it. The hint only orders the lookups (RFC 7009 2.1: the server must
        extend its search if the hint is wrong). An expired access token is still found; revoking it is a no-op."""
        lookups = [self._find_refresh_token, self._find_access_token]
        if hint == "access_token":
            lookups.reverse()
        for lookup in lookups:
            found = await lookup(token)
            if found is not None:
                return found
        return None

    async def revoke(self, token: RevocableToken) -> None:
        """A refresh token takes its whole family with it (RFC 7009 2.1: "the authorization server ... SHOULD also
        invalidate all access tokens based on the same authorization grant"); an access token goes to the
        blocklist until it expires. The client asked, so it gets no back-channel logout."""
        if token.family_id is not None:
            await self._families.revoke(token.family_id, "revoked_by_client", notify=False)
        elif token.jti is not None and token.exp > self._clock():
            await self._blocklist.add(token.jti, token.exp)

    async def _find_refresh_token(self, token: str) -> RevocableToken | None:
        loaded = await self._families.find(token)
        if loaded is None:
            return None
        return RevocableToken("refresh_token", loaded.family.client_id, family_id=loaded.family.family_id)

    async def _find_access_token(self, token: str) -> RevocableToken | None:
        claims = self._minter.verify(token, typ=ACCESS_TOKEN_TYP)
        if claims is None:
            return None
        return RevocableToken("access_token", str(claims["client_id"]), jti=str(claims["jti"]), exp=int(claims["exp"]))


@dataclass(frozen=True)
class IdPServices:
    """What authlib's hooks reach, through the server (``DevAuthorizationServer.services``)."""

    settings: DevIdPSettings
    keys: KeyRing
    codes: AuthorizationCodes
    issuer: TokenIssuer
    sessions: BrowserSessions
    clock: Clock
