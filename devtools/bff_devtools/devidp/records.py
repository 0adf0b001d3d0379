"""What the IdP keeps in the store: the key of every record and index, and the records themselves (JSON).

The store is bff's :class:`~bff.session.store.SessionStore` (memory or Redis, same choices as bff), so the rules are
its rules: every key is written with a TTL, every operation touches one key, nothing is ever found by scanning
(no KEYS, no SCAN). Where the IdP must find things again, it keeps an index set:

==========================  =============================================================================
key                         value
==========================  =============================================================================
``c:{hash(code)}``          :class:`AuthorizationCode`, one-time (taken atomically), 60 s
``n:{client}:{hash}``       a nonce already used by ``client`` (replay check, OpenID Connect Core 15.5.2)
``l:{tx}``                  :class:`LoginTransaction`: a login form shown to one browser, 10 min
``s:{sid}``                 :class:`BrowserSession`: the IdP's own session (single sign-on)
``s:{sid}:families``        index: refresh-token families issued in that session
``s:{sid}:clients``         index: clients that received tokens in that session (back-channel logout)
``r:{hash(refresh token)}`` the token's family id; kept after rotation, so a replay finds its family
``f:{family}``              :class:`Family`: user, sid, client, state, the hash of its current token
``f:{family}:jtis``         index: ``jti:exp`` of the family's access tokens (blocklisted when it is revoked)
``u:{username}:families``   index: the user's families (admin page, change of password)
``u:{username}:version``    the user's token version; bumped when the password changes
``u:{username}:password``   the user's password hash once changed (else the one from the settings)
``blocklist``               index: ``jti:exp`` of revoked access tokens, pruned on read
==========================  =============================================================================

Secrets (codes, refresh tokens, the session cookie's secret half) appear only as SHA-256 hashes, so a store dump
yields no usable credential. Family ids and ``sid`` values are not secret (``sid`` is in every ID token).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, Self

from bff_devtools.acr import ACR_PWD

#: Why a family stopped being usable (shown on the admin page).
RevokedReason = Literal["reuse_detected", "revoked_by_client", "logout", "password_changed", "admin"]
FamilyState = Literal["active", "revoked"]

#: The store has no TTL-less write; "forever" for records that must outlive every token (passwords, versions).
PERSISTENT_TTL = 10 * 365 * 86400.0
BLOCKLIST = "blocklist"
#: Ids the IdP makes (``secrets.token_urlsafe``); anything else from a request never reaches a store key.
_RANDOM_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def is_random_id(value: str) -> bool:
    """True for a value shaped like an id this IdP generates (sid, family id): safe inside a store key."""
    return _RANDOM_ID.fullmatch(value) is not None


def secret_hash(secret: str) -> str:
    """SHA-256 of a secret, unpadded base64url: how codes, refresh tokens and cookie secrets are stored."""
    digest = hashlib.sha256(secret.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def code_key(code: str) -> str:
    return f"c:{secret_hash(code)}"


def nonce_key(client_id: str, nonce: str) -> str:
    return f"n:{client_id}:{secret_hash(nonce)}"


def pushed_key(request_uri: str) -> str:
    return f"p:{secret_hash(request_uri)}"


def login_key(tx: str) -> str:
    return f"l:{secret_hash(tx)}"


def session_key(sid: str, index: Literal["families", "clients"] | None = None) -> str:
    """``s:{sid}``, the session's record, or ``s:{sid}:{index}``, one of its indexes."""
    return f"s:{sid}" if index is None else f"s:{sid}:{index}"


def refresh_key(token_hash: str) -> str:
    return f"r:{token_hash}"


def family_key(family_id: str, index: Literal["jtis"] | None = None) -> str:
    """``f:{family}``, the family's record, or ``f:{family}:{index}``, one of its indexes."""
    return f"f:{family_id}" if index is None else f"f:{family_id}:{index}"


def user_key(username: str, record: Literal["families", "version", "password"]) -> str:
    """``u:{username}:{record}``: the user's families (an index), token version or changed password hash."""
    return f"u:{username}:{record}"


def jti_member(jti: str, exp: int) -> str:
    """An index member for an access token: ``jti:exp`` (jtis are URL-safe, so the last ``:`` splits)."""
    return f"{jti}:{exp}"


def parse_jti_member(member: str) -> tuple[str, int] | None:
    jti, _, exp = member.rpartition(":")
    return (jti, int(exp)) if jti and exp.isdigit() else None


class _Record:
    """JSON (de)serialisation shared by the records: the dataclass fields, nothing else."""

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode()  # type: ignore[call-overload]

    @classmethod
    def from_bytes(cls, raw: bytes) -> Self:
        data: dict[str, Any] = json.loads(raw)
        return cls(**data)


@dataclass(frozen=True)
class AuthorizationCode(_Record):
    """An issued authorization code (RFC 6749 4.1.2), bound to its client, redirect URI and PKCE challenge."""

    client_id: str
    redirect_uri: str
    scope: str
    username: str
    sid: str
    auth_time: int
    code_challenge: str
    code_challenge_method: str
    nonce: str | None = None
    #: The authentication context class of the login (``acr``).
    acr: str = ACR_PWD
    #: RFC 9449 10: the thumbprint of the only DPoP key the code may be redeemed with.
    dpop_jkt: str | None = None


@dataclass(frozen=True)
class LoginTransaction(_Record):
    """A login form shown to one browser: valid once, only in that browser (login CSRF, RFC 6749 10.12).

    ``params`` are the authorization request's parameters, or None when the form guards ``/admin``."""

    browser_hash: str
    params: list[tuple[str, str]] | None = None

    @classmethod
    def from_bytes(cls, raw: bytes) -> Self:
        data: dict[str, Any] = json.loads(raw)
        params = data.get("params")
        return cls(data["browser_hash"], None if params is None else [(str(k), str(v)) for k, v in params])


@dataclass(frozen=True)
class BrowserSession(_Record):
    """The IdP's session with a browser. The cookie is ``sid.secret``; only the secret's hash is stored."""

    sid: str
    username: str
    auth_time: int
    secret_hash: str
    #: Synchronizer token for the forms shown inside this session (admin page, logout confirmation).
    csrf: str
    #: The user's token version at login: a change of password ends every session created before it.
    user_version: int
    #: The authentication context class reached at login (``acr``: a password, or a password and a second factor).
    acr: str = ACR_PWD


@dataclass(frozen=True)
class Family(_Record):
    """A refresh-token family: every token rotated out of one grant (RFC 9700 4.14.2). Never holds a token."""

    family_id: str
    client_id: str
    username: str
    sub: str
    sid: str
    scope: str
    auth_time: int
    user_version: int
    created_at: float
    last_used_at: float
    #: SHA-256 of the only refresh token of the family that may be used now.
    current_hash: str
    state: FamilyState = "active"
    revoked_reason: RevokedReason | None = None
    revoked_at: float | None = None
    #: How many times the family was rotated (for the admin page).
    rotations: int = field(default=0)
    #: SHA-256 of the token the last rotation replaced, and when: the reuse grace window's one exception.
    previous_hash: str | None = None
    rotated_at: float | None = None
    #: The ``acr`` of the login the family was issued in (refreshed tokens keep it).
    acr: str = ACR_PWD

    def rotated(self, new_hash: str, now: float) -> Family:
        return replace(
            self,
            current_hash=new_hash,
            previous_hash=self.current_hash,
            rotated_at=now,
            last_used_at=now,
            rotations=self.rotations + 1,
        )

    def revoked(self, reason: RevokedReason, now: float) -> Family:
        return replace(self, state="revoked", revoked_reason=reason, revoked_at=now)
