"""Settings of the development identity provider: frozen dataclasses with stated defaults, validated at once.

Validation collects every problem and raises one :class:`~bff.errors.ConfigError` (STYLE 7), so ``bff devidp``
with three bad flags names all three.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from bff.config.reader import is_loopback_host
from bff.errors import ConfigError
from bff_devtools.devidp.passwords import hash_password

Alg = Literal["ES256", "RS256"]
GrantType = Literal[
    "authorization_code",
    "refresh_token",
    "client_credentials",
    "urn:ietf:params:oauth:grant-type:token-exchange",
]
ALGS: tuple[Alg, ...] = get_args(Alg)
GRANT_TYPES: tuple[GrantType, ...] = get_args(GrantType)
#: Scopes every client may ask for; a client's ``scope`` may add its own (API scopes for client credentials).
STANDARD_SCOPES = ("openid", "profile", "email", "offline_access")
DEFAULT_DATA_DIR = Path(".bff-data/devidp")
#: RFC 8693 2.1: the token exchange grant.
TOKEN_EXCHANGE: GrantType = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a grant URI
#: Longest refresh-token reuse grace window, in seconds.
MAX_REUSE_GRACE = 300.0


@dataclass(frozen=True)
class ClientRegistration:
    """A registered client (OpenID Connect Dynamic Client Registration 1.0 section 2 names the fields).

    ``client_secret=None`` registers a public client: it authenticates with ``none`` and proves possession with
    PKCE only. Redirect URIs, post-logout redirect URIs and the back-channel URI are compared exactly, never by
    prefix (RFC 9700 4.1.3).
    """

    client_id: str
    client_secret: str | None = field(repr=False)
    redirect_uris: tuple[str, ...] = ()
    post_logout_redirect_uris: tuple[str, ...] = ()
    backchannel_logout_uri: str | None = None
    grant_types: tuple[GrantType, ...] = ("authorization_code", "refresh_token")
    scope: str = " ".join(STANDARD_SCOPES)
    #: None: the secret's methods (or ``none`` for a public client); ``tls_client_auth`` or
    #: ``self_signed_tls_client_auth`` (RFC 8705 2): the TLS client certificate authenticates the client;
    #: ``private_key_jwt`` (RFC 7523, OpenID Connect Core 9): a JWT signed with a key of ``jwks``.
    token_endpoint_auth_method: str | None = None
    #: ``tls_client_auth``: the certificate's subject, RFC 4514 (``CN=bff``) (RFC 8705 2.1.2).
    tls_client_auth_subject_dn: str | None = None
    #: ``self_signed_tls_client_auth``: the ``x5t#S256`` of each registered self-signed certificate (RFC 8705 2.2).
    self_signed_certificates: tuple[str, ...] = ()
    #: RFC 8705 3.4: access tokens carry ``cnf.x5t#S256`` of the certificate the token request came with.
    tls_client_certificate_bound_access_tokens: bool = False
    #: Audiences (or RFC 8707 resources) this client may ask a token exchange for (RFC 8693 2.1 ``audience``);
    #: anything else is refused with ``invalid_target``.
    exchange_audiences: tuple[str, ...] = ()
    #: The client's public keys (a JWK Set): they verify its ``private_key_jwt`` assertions and its signed request
    #: objects (RFC 9101).
    jwks: Mapping[str, Any] | None = field(default=None, compare=False)

    @property
    def is_public(self) -> bool:
        return self.client_secret is None


@dataclass(frozen=True)
class DemoUser:
    """A user of the IdP. ``demo_password`` is only shown on the login page in demo mode; logins check the hash."""

    username: str
    sub: str
    name: str
    email: str
    role: str
    password_hash: str = field(repr=False)
    email_verified: bool = True
    demo_password: str | None = field(default=None, repr=False)


@functools.cache
def default_users() -> tuple[DemoUser, ...]:
    """alice (role ``admin``, password ``wonderland``) and bob (role ``user``, password ``builder``).

    Cached: hashing costs ~50 ms per password, and the tuple of frozen users is safe to share.
    """
    return (
        DemoUser(
            "alice", "alice-0001", "Alice Example", "alice@example.com", "admin", hash_password("wonderland"),
            demo_password="wonderland",  # noqa: S106 - demo passwords are public by design
        ),
        DemoUser(
            "bob", "bob-0002", "Bob Example", "bob@example.com", "user", hash_password("builder"),
            demo_password="builder",  # noqa: S106 - demo passwords are public by design
        ),
    )  # fmt: skip


@dataclass(frozen=True)
class DevIdPSettings:
    """Everything ``create_devidp_app`` needs. Durations are seconds."""

    #: The issuer identifier (OpenID Connect Discovery 1.0 section 3): every endpoint URL derives from it.
    issuer: str
    #: Where the signing keys live (``signing-key.pem``, ``retired-keys.json``); created 0700 when missing.
    data_dir: Path
    #: ``memory://`` or a Redis URL, as for bff's ``[session] store``.
    store_url: str = "memory://"
    #: Prefix of every key in Redis, so the IdP can share a database with bff.
    store_prefix: str = "devidp:"
    alg: Alg = "ES256"
    access_token_ttl: float = 900
    refresh_token_ttl: float = 7 * 86400
    id_token_ttl: float = 300
    #: The IdP's own browser session (single sign-on across clients).
    session_ttl: float = 12 * 3600
    #: ``aud`` of access tokens unless the client asks for one of ``resources`` (RFC 8707).
    audience: str = "demo-api"
    #: Further RFC 8707 resource indicators a client may ask for with ``resource=``.
    resources: tuple[str, ...] = ()
    clients: tuple[ClientRegistration, ...] = ()
    users: tuple[DemoUser, ...] = field(default_factory=default_users)
    #: Shows the demo passwords on the login page and enables ``/admin``.
    demo_mode: bool = True
    #: Seconds during which the refresh token that the last rotation replaced may be presented once more and is
    #: rotated again instead of revoking its family (Auth0's reuse interval, Okta's grace period): a client that
    #: never got the answer to its refresh can retry. 0 (the default) keeps reuse detection strict.
    refresh_reuse_grace: float = 0
    #: Demand a server nonce in DPoP proofs at the token endpoint (RFC 9449 8): ``use_dpop_nonce`` first.
    dpop_nonce: bool = False
    #: Refuse token requests that carry no DPoP proof, as for a client registered with ``dpop_bound_access_tokens``
    #: (RFC 9449 5.2): ``invalid_dpop_proof``.
    require_dpop: bool = False
    #: Serve and advertise the pushed authorization request endpoint ``/par`` (RFC 9126).
    par: bool = True
    #: Accept authorization requests only through ``/par`` (RFC 9126 5 ``require_pushed_authorization_requests``).
    require_pushed_authorization_requests: bool = False
    #: Accept authorization requests only as signed request objects (RFC 9101 10.5 ``require_signed_request_object``).
    require_signed_request_object: bool = False
    #: Send ``iss`` in authorization responses and advertise it (RFC 9207); off only to test clients against an
    #: IdP without it.
    iss_parameter: bool = True
    #: How many request object ``jti`` values, as many client assertion ones and as many DPoP proof ones are
    #: remembered at a time (each until its message expires): beyond that, new ones are refused until old ones
    #: expire.
    jti_cache_size: int = 10_000

    def __post_init__(self) -> None:
        problems = [
            *_issuer_problems(self.issuer),
            *_ttl_problems(self),
            *_client_problems(self.clients),
            *_unique_problems("users", [u.username for u in self.users] + [u.sub for u in self.users]),
        ]
        if not 0 <= self.refresh_reuse_grace <= MAX_REUSE_GRACE:
            problems.append("refresh_reuse_grace: must be between 0 and 5m (a longer window defeats reuse detection)")
        if self.require_pushed_authorization_requests and not self.par:
            problems.append("require_pushed_authorization_requests: needs par (the /par endpoint)")
        if self.jti_cache_size < 1:
            problems.append("jti_cache_size: must be at least 1")
        if self.alg not in ALGS:
            problems.append(f"alg: must be one of {', '.join(ALGS)}, got {self.alg!r}")
        if problems:
            raise ConfigError(problems)

    @property
    def max_token_ttl(self) -> float:
        """The longest lifetime of a signed token: how long a retired signing key must stay in the JWKS."""
        return max(self.access_token_ttl, self.id_token_ttl)

    @property
    def secure_cookies(self) -> bool:
        """Cookies get ``Secure`` when the issuer is https (on http://localhost a browser would drop them)."""
        return self.issuer.startswith("https://")

    def client(self, client_id: str) -> ClientRegistration | None:
        return next((c for c in self.clients if c.client_id == client_id), None)

    def user(self, username: str) -> DemoUser | None:
        return next((u for u in self.users if u.username == username), None)

    def user_by_sub(self, sub: str) -> DemoUser | None:
        return next((u for u in self.users if u.sub == sub), None)

    def scopes_supported(self) -> list[str]:
        extra = sorted({s for c in self.clients for s in c.scope.split()} - set(STANDARD_SCOPES))
        return [*STANDARD_SCOPES, *extra]


def _issuer_problems(issuer: str) -> list[str]:
    parts = urlsplit(issuer)
    # Discovery 1.0 section 3 / RFC 8414 section 2: a URL with scheme and host, no query and no fragment.
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [f"issuer: must be an http(s) URL, got {issuer!r}"]
    if parts.query or parts.fragment or issuer.endswith("/"):
        return [f"issuer: must have no query, fragment or trailing slash, got {issuer!r}"]
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        # bff's own rule for an IdP (bff.oidc._http.is_secure_url); authlib's transport check agrees (RFC 6749 3.1).
        return [f"issuer: plain http only for a loopback host (localhost, *.localhost, 127.0.0.1), got {issuer!r}"]
    return []


def _ttl_problems(settings: DevIdPSettings) -> list[str]:
    names = ("access_token_ttl", "refresh_token_ttl", "id_token_ttl", "session_ttl")
    return [f"{name}: must be at least 1 second" for name in names if not getattr(settings, name) >= 1]


def _client_problems(clients: Sequence[ClientRegistration]) -> list[str]:
    problems = _unique_problems("clients", [c.client_id for c in clients])
    for c in clients:
        where = f"clients[{c.client_id}]"
        if c.client_secret is not None and len(c.client_secret) < 16:
            problems.append(f"{where}.client_secret: must be at least 16 characters (or None for a public client)")
        unknown = [g for g in c.grant_types if g not in GRANT_TYPES]
        if unknown:
            problems.append(f"{where}.grant_types: unknown {', '.join(unknown)}")
        if c.is_public and "client_credentials" in c.grant_types:
            problems.append(f"{where}: a public client cannot use client_credentials (RFC 6749 4.4)")
        problems.extend(_tls_client_problems(c, where))
        if c.is_public and TOKEN_EXCHANGE in c.grant_types:
            problems.append(f"{where}: a public client cannot use the token exchange grant (RFC 8693 2.1)")
        if c.exchange_audiences and TOKEN_EXCHANGE not in c.grant_types:
            problems.append(f"{where}.exchange_audiences: the client does not have the token exchange grant")
        if "authorization_code" in c.grant_types and not c.redirect_uris:
            problems.append(f"{where}.redirect_uris: the authorization_code grant needs at least one")
        uris = [*c.redirect_uris, *c.post_logout_redirect_uris, *filter(None, [c.backchannel_logout_uri])]
        problems.extend(f"{where}: {uri!r} is not an absolute http(s) URL" for uri in uris if not _is_url(uri))
    return problems


def _tls_client_problems(c: ClientRegistration, where: str) -> list[str]:
    method = c.token_endpoint_auth_method
    if method is None:
        return []
    if method == "private_key_jwt":
        return [] if c.jwks else [f"{where}.jwks: required for private_key_jwt (RFC 7523: the client's public keys)"]
    if method == "tls_client_auth" and not c.tls_client_auth_subject_dn:
        return [f"{where}.tls_client_auth_subject_dn: required for tls_client_auth (RFC 8705 2.1.2)"]
    if method == "self_signed_tls_client_auth" and not c.self_signed_certificates:
        return [f"{where}.self_signed_certificates: required for self_signed_tls_client_auth (RFC 8705 2.2)"]
    if method not in ("tls_client_auth", "self_signed_tls_client_auth"):
        return [
            f"{where}.token_endpoint_auth_method: expected private_key_jwt, tls_client_auth or"
            " self_signed_tls_client_auth"
        ]
    return []


def _unique_problems(what: str, names: Sequence[str]) -> list[str]:
    duplicates = sorted({n for n in names if names.count(n) > 1})
    return [f"{what}: {name!r} is defined twice" for name in duplicates]


def _is_url(uri: str) -> bool:
    parts = urlsplit(uri)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.fragment
