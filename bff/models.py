"""Value objects shared by the session and OIDC layers. Standard library only.

A :class:`Session` is what bff keeps server-side for one logged-in browser: the user's minimal claims, the
IdP session id, the tokens and the session's clocks. It is serialised to JSON and encrypted as a whole before it
reaches the store (see ``bff.session.manager``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from bff.types import JSONObject


@dataclass(frozen=True)
class TokenSet:
    """Tokens from one token-endpoint answer. ``expires_at`` is absolute (epoch seconds), computed at issue."""

    access_token: str
    token_type: str = "Bearer"
    expires_at: float | None = None
    refresh_token: str | None = None
    #: When the refresh token stops working, if the IdP said so (``refresh_expires_in``, Keycloak and others).
    refresh_expires_at: float | None = None
    id_token: str | None = None
    scope: str | None = None

    def to_json(self) -> JSONObject:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: JSONObject) -> TokenSet:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class Session:
    sub: str
    tokens: TokenSet
    created_at: float
    #: The session is never used past this instant, whatever its activity (absolute timeout).
    expires_at: float
    last_seen: float
    sid: str | None = None
    #: The user's claims that ``/bff/user`` may show (minimal; never a token).
    claims: JSONObject = field(default_factory=dict)
    #: Bumped on every write; the basis of compare-and-set writes.
    version: int = 1
    #: Per-route access tokens (RFC 8707 ``resource`` and/or ``scopes``), keyed by ``route_token_key``.
    route_tokens: dict[str, TokenSet] = field(default_factory=dict)

    def to_json(self) -> JSONObject:
        out: JSONObject = {
            "sub": self.sub,
            "tokens": self.tokens.to_json(),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "last_seen": self.last_seen,
            "claims": self.claims,
            "version": self.version,
        }
        if self.sid is not None:
            out["sid"] = self.sid
        if self.route_tokens:
            out["route_tokens"] = {k: v.to_json() for k, v in self.route_tokens.items()}
        return out

    @classmethod
    def from_json(cls, data: JSONObject) -> Session:
        return cls(
            sub=str(data["sub"]),
            tokens=TokenSet.from_json(data["tokens"]),
            created_at=float(data["created_at"]),
            expires_at=float(data["expires_at"]),
            last_seen=float(data["last_seen"]),
            sid=data.get("sid"),
            claims=dict(data.get("claims", {})),
            version=int(data.get("version", 1)),
            route_tokens={k: TokenSet.from_json(v) for k, v in data.get("route_tokens", {}).items()},
        )

    def evolve(self, **changes: Any) -> Session:
        return replace(self, **changes)


@dataclass(frozen=True)
class LoginState:
    """One started login: sealed into its own login cookie in the browser that started it (never in the store),
    usable for ``login_timeout`` and consumed exactly once by the callback."""

    state: str
    nonce: str
    code_verifier: str
    return_to: str
    created_at: float
    #: A step-up login (RFC 9470): the ``acr_values`` and ``max_age`` it asked for, which the callback checks.
    acr_values: tuple[str, ...] = ()
    max_age: int | None = None

    def to_json(self) -> JSONObject:
        out = asdict(self)
        # Left out when unused, so a plain login's cookie is what a release without step-up writes and reads.
        if not self.acr_values:
            del out["acr_values"]
        if self.max_age is None:
            del out["max_age"]
        return out

    @classmethod
    def from_json(cls, data: JSONObject) -> LoginState:
        optional = ("acr_values", "max_age")
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k not in optional or k in data}
        if "acr_values" in fields:
            fields["acr_values"] = tuple(str(v) for v in fields["acr_values"])
        return cls(**fields)
