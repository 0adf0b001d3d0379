"""Typed configuration: one TOML file, read once, validated completely.

``load_config(path)`` returns a frozen :class:`Config` or raises :class:`~bff.errors.ConfigError` carrying every
problem found, each prefixed with its key path (``routes[2].upstream: ...``), in the manner of oauth2-proxy's
``pkg/validation``: collect, then fail once. Unknown keys are errors, so a typo is never silently ignored.

``${VAR}`` anywhere in a string value reads the environment; a missing variable is a problem, not an empty string.
Secrets are wrapped in :class:`Secret`, whose ``repr`` hides the value.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from bff.config_reader import (
    HEADER_NAME,
    Reader,
    check_url,
    origin_of,
    parse_duration,
    parse_size,
    table,
)
from bff.errors import ConfigError

__all__ = ["Config", "Secret", "load_config", "parse_config", "parse_duration", "parse_size"]

TokenPolicy = Literal["user", "client", "user_or_none", "none"]
AuthMethod = Literal["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
SameSite = Literal["strict", "lax"]

TOKEN_POLICIES: tuple[TokenPolicy, ...] = ("user", "client", "user_or_none", "none")
AUTH_METHODS: tuple[AuthMethod, ...] = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")
#: Asymmetric algorithms only (RFC 8725 3.1): "none" and HMAC are never accepted for ID or logout tokens.
ALLOWED_SIGNING_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
#: Paths bff answers itself; a route may not shadow them.
RESERVED_PREFIXES = ("/bff", "/healthz", "/readyz")
MIN_KEY_LENGTH = 32
#: Bound of ``[session] max_pending_logins``: each pending login is a cookie of up to ~3 KB on every request.
MAX_PENDING_LOGINS = 20
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class Secret:
    """A string that never shows itself in ``repr``/``str`` (Starlette's ``datastructures.Secret``)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    public_origin: str = "http://localhost:8000"
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    #: Open connections per worker process; one more is answered 503 and closed at once.
    max_connections: int = 4096
    #: A request head (request line and header fields) must be complete this long after its first byte (or after
    #: the connection opened); otherwise 408 and close. More header lines do not extend it.
    header_timeout: float = 10.0
    #: An idle keep-alive connection (no byte of a next request) is closed this long after the previous answer.
    keep_alive_timeout: float = 5.0
    #: A request body that stops arriving (no byte for this long, while bff is ready to read) ends the connection.
    body_timeout: float = 30.0
    #: Largest request head in bytes (request line, header fields, line ends); 431 and close beyond it.
    max_request_header_size: int = 64 * 1024
    #: Most header fields in one request head; 431 and close beyond it.
    max_request_headers: int = 100


@dataclass(frozen=True)
class SessionSettings:
    keys: tuple[Secret, ...]
    store: str = "memory://"
    cookie_name: str = "__Host-bff"
    same_site: SameSite = "strict"
    idle_timeout: float = 30 * 60
    absolute_timeout: float = 12 * 3600
    #: How long a started login may take before its state expires (one-time, bound to the browser).
    login_timeout: float = 10 * 60
    #: Logins one browser may have pending at once (one login cookie each; starting another drops the oldest).
    max_pending_logins: int = 5
    #: Seconds to wait for the store before answering 503.
    store_timeout: float = 2.0
    #: Bytes: the largest reply (a session record) accepted from Redis on the per-request session read.
    store_max_reply: int = 1024 * 1024


@dataclass(frozen=True)
class OIDCSettings:
    issuer: str
    client_id: str
    client_secret: Secret | None = None
    token_endpoint_auth_method: AuthMethod = "client_secret_basic"
    #: PEM private key file for ``private_key_jwt``.
    private_key_file: str | None = None
    scopes: tuple[str, ...] = ("openid", "profile", "email", "offline_access")
    redirect_uri: str = ""
    post_logout_redirect_uri: str | None = None
    id_token_signing_algs: tuple[str, ...] = ("RS256", "ES256")
    #: Audiences besides ``client_id`` that an ID or logout token may also name (OpenID Connect Core 3.1.3.7 step 3);
    #: a token naming any other is refused. Empty: the client trusts no other audience.
    trusted_audiences: tuple[str, ...] = ()
    #: Leeway for ``exp``/``iat``/``nbf`` checks (clock skew between bff and the IdP).
    clock_skew: float = 60.0
    #: Timeout for each call to the IdP.
    timeout: float = 10.0
    #: Extra parameters for the authorization request (e.g. ``prompt``, ``audience``); never ``state``/``nonce``.
    extra_auth_params: Mapping[str, str] = field(default_factory=dict)
    #: CA bundle for an IdP behind a private CA.
    ca_bundle: str | None = None
    #: Claims of the ID token that ``/bff/user`` may show (minimal claims by default).
    user_claims: tuple[str, ...] = (
        "sub",
        "name",
        "given_name",
        "family_name",
        "preferred_username",
        "email",
        "email_verified",
        "picture",
        "locale",
        "role",
        "roles",
        "groups",
    )


@dataclass(frozen=True)
class RouteSettings:
    path: str
    upstream: str
    token: TokenPolicy = "user"
    strip_prefix: bool = True
    #: Allowed methods; empty means all.
    methods: tuple[str, ...] = ()
    connect_timeout: float = 5.0
    timeout: float = 30.0
    max_body: int = 10 * 1024 * 1024
    set_headers: Mapping[str, str] = field(default_factory=dict)
    remove_headers: tuple[str, ...] = ()
    ca_bundle: str | None = None
    #: RFC 8707 resource indicator and scopes for a per-route token (issue 4).
    resource: str | None = None
    scopes: tuple[str, ...] = ()
    #: Refresh and replay on a plain 401 too, not only on ``WWW-Authenticate: Bearer error="invalid_token"``.
    refresh_on_401: bool = False
    #: ``token = "client"`` only: serve callers without a session too (bff's own token then works for anyone).
    anonymous: bool = False


@dataclass(frozen=True)
class TokenSettings:
    #: Refresh an access token this long before it expires (proactive refresh).
    refresh_leeway: float = 30.0
    #: Lease of the cross-process refresh lock; renewed every third of it while the IdP call runs.
    refresh_lock_lease: float = 5.0
    #: How long a refresh call may take at the IdP. A request waits only ``[oidc] timeout`` for it (then 503); the
    #: refresh itself goes on to this deadline, so a slow IdP's answer (a rotated refresh token) is kept.
    refresh_timeout: float = 60.0
    #: Requests with bodies up to this size are kept so they can be replayed after a 401 and a refresh.
    replay_limit: int = 64 * 1024


@dataclass(frozen=True)
class FrontendSettings:
    directory: str | None = None
    dev_server: str | None = None


@dataclass(frozen=True)
class Config:
    server: ServerSettings
    session: SessionSettings
    oidc: OIDCSettings
    routes: tuple[RouteSettings, ...] = ()
    frontend: FrontendSettings | None = None
    tokens: TokenSettings = field(default_factory=TokenSettings)
    source: str = "<memory>"


def _server(root: Reader) -> ServerSettings:
    r = table(root, "server")
    defaults = ServerSettings()
    listen = r.get("listen", str, f"{defaults.host}:{defaults.port}")
    host, port = defaults.host, defaults.port
    h, sep, p = listen.rpartition(":")
    if not sep or not p.isdigit() or not (0 < int(p) < 65536):
        r.problem("listen", f"expected host:port, got {listen!r}")
    else:
        host, port = h.strip("[]") or "127.0.0.1", int(p)
    public_origin = r.get("public_origin", str, "", required=True)
    if public_origin and check_url(r, "public_origin", public_origin, path_ok=False):
        public_origin = origin_of(public_origin)
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for i, cidr in enumerate(r.string_list("trusted_proxies", ())):
        try:
            nets.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            r.problem(f"trusted_proxies[{i}]", f"expected a CIDR like 10.0.0.0/8, got {cidr!r}")
    max_connections = r.get("max_connections", int, defaults.max_connections)
    if not 1 <= max_connections <= 1_000_000:
        r.problem("max_connections", f"must be between 1 and 1000000, got {max_connections}")
        max_connections = defaults.max_connections
    header_timeout = r.converted("header_timeout", parse_duration, defaults.header_timeout)
    if not 0 < header_timeout <= 300:
        r.problem("header_timeout", "must be more than 0 and at most 5m")
        header_timeout = defaults.header_timeout
    keep_alive = r.converted("keep_alive_timeout", parse_duration, defaults.keep_alive_timeout)
    if not 0 < keep_alive <= 3600:
        r.problem("keep_alive_timeout", "must be more than 0 and at most 1h")
        keep_alive = defaults.keep_alive_timeout
    body_timeout = r.converted("body_timeout", parse_duration, defaults.body_timeout)
    if not 0 < body_timeout <= 3600:
        r.problem("body_timeout", "must be more than 0 and at most 1h")
        body_timeout = defaults.body_timeout
    head_size = r.converted("max_request_header_size", parse_size, defaults.max_request_header_size)
    if not 1024 <= head_size <= 1024 * 1024:
        r.problem("max_request_header_size", "must be between 1KiB and 1MiB (request heads are held in memory)")
        head_size = defaults.max_request_header_size
    head_fields = r.get("max_request_headers", int, defaults.max_request_headers)
    if not 1 <= head_fields <= 10_000:
        r.problem("max_request_headers", f"must be between 1 and 10000, got {head_fields}")
        head_fields = defaults.max_request_headers
    r.finish()
    return ServerSettings(
        host=host,
        port=port,
        public_origin=public_origin,
        trusted_proxies=tuple(nets),
        max_connections=max_connections,
        header_timeout=header_timeout,
        keep_alive_timeout=keep_alive,
        body_timeout=body_timeout,
        max_request_header_size=head_size,
        max_request_headers=head_fields,
    )


def _session(root: Reader) -> SessionSettings:
    r = table(root, "session", required=True)
    store = r.get("store", str, "memory://")
    if urlsplit(store).scheme not in ("memory", "redis", "rediss", "redis+sentinel", "redis+cluster", "unix"):
        r.problem(
            "store",
            f"expected memory://, redis://, rediss://, redis+sentinel:// or redis+cluster://, "
            f"got scheme {urlsplit(store).scheme!r}",
        )
    cookie_name = r.get("cookie_name", str, "__Host-bff")
    if not cookie_name.startswith("__Host-") or not HEADER_NAME.match(cookie_name):
        r.problem(
            "cookie_name",
            "must start with __Host- (binds the cookie to this origin: Secure, Path=/, no Domain)"
            " and be a valid cookie name",
        )
    same_site = r.get("same_site", str, "strict").lower()
    if same_site == "none":
        r.problem("same_site", "SameSite=None is refused: it sends the session cookie on cross-site requests (CSRF)")
        same_site = "strict"
    elif same_site not in ("strict", "lax"):
        r.problem("same_site", f"expected 'strict' or 'lax', got {same_site!r}")
        same_site = "strict"
    idle = r.converted("idle_timeout", parse_duration, 30 * 60.0)
    absolute = r.converted("absolute_timeout", parse_duration, 12 * 3600.0)
    login = r.converted("login_timeout", parse_duration, 600.0)
    store_timeout = r.converted("store_timeout", parse_duration, 2.0)
    max_pending = r.get("max_pending_logins", int, SessionSettings.max_pending_logins)
    if not 1 <= max_pending <= MAX_PENDING_LOGINS:
        r.problem("max_pending_logins", f"must be between 1 and {MAX_PENDING_LOGINS}, got {max_pending}")
        max_pending = SessionSettings.max_pending_logins
    if login <= 0:
        r.problem("login_timeout", "must be positive")
    store_max_reply = r.converted("store_max_reply", parse_size, 1024 * 1024)
    if store_max_reply < 4096:
        r.problem("store_max_reply", "must be at least 4KiB (a session record must fit)")
    elif store_max_reply > 512 * 1024 * 1024:
        r.problem("store_max_reply", "must not exceed 512MiB (Redis's own largest bulk string)")
    if idle <= 0:
        r.problem("idle_timeout", "must be positive")
    if absolute <= 0:
        r.problem("absolute_timeout", "must be positive")
    if 0 < absolute < idle:
        r.problem("idle_timeout", "must not exceed absolute_timeout")
    if "keys" not in r.data:
        r.problem(
            "keys",
            "is required: a list of secrets of at least 32 characters, newest last "
            '(e.g. keys = ["${BFF_SESSION_KEY}"]; generate one with `python -c \'import secrets; '
            "print(secrets.token_urlsafe(32))'`)",
        )
    keys = r.string_list("keys", ())
    if "keys" in r.data and not keys and not any(p.startswith(r.key("keys")) for p in r.problems):
        r.problem("keys", "must hold at least one key")
    for i, key in enumerate(keys):
        if len(key) < MIN_KEY_LENGTH:
            r.problem(
                f"keys[{i}]", f"is too short ({len(key)} characters); use at least {MIN_KEY_LENGTH} random characters"
            )
    if len(set(keys)) != len(keys):
        r.problem("keys", "contains the same key twice")
    r.finish()
    return SessionSettings(
        keys=tuple(Secret(k) for k in keys),
        store=store,
        cookie_name=cookie_name,
        same_site=same_site,  # type: ignore[arg-type]
        idle_timeout=idle,
        absolute_timeout=absolute,
        login_timeout=login,
        max_pending_logins=max_pending,
        store_timeout=store_timeout,
        store_max_reply=store_max_reply,
    )


def _oidc(root: Reader, public_origin: str) -> OIDCSettings:
    r = table(root, "oidc", required=True)
    issuer = r.get("issuer", str, "", required=True)
    if issuer:
        check_url(r, "issuer", issuer)
    client_id = r.get("client_id", str, "", required=True)
    secret_value = r.get("client_secret", str, "")
    method = r.get("token_endpoint_auth_method", str, "client_secret_basic")
    if method not in AUTH_METHODS:
        r.problem("token_endpoint_auth_method", f"expected one of {', '.join(AUTH_METHODS)}, got {method!r}")
        method = "client_secret_basic"
    key_file = r.get("private_key_file", str, "") or None
    if (
        method in ("client_secret_basic", "client_secret_post")
        and not secret_value
        and not any(p.startswith(r.key("client_secret")) for p in r.problems)
    ):
        r.problem("client_secret", f"is required for {method}")
    if method == "private_key_jwt":
        if not key_file:
            r.problem("private_key_file", "is required for private_key_jwt")
        elif not Path(key_file).is_file():
            r.problem("private_key_file", f"file not found: {key_file}")
    scopes = r.string_list("scopes", OIDCSettings.scopes)
    if "openid" not in scopes:
        r.problem("scopes", "must include 'openid'")
    redirect_uri = r.get("redirect_uri", str, "")
    if not redirect_uri and public_origin:
        redirect_uri = public_origin + "/bff/callback"
    elif (
        redirect_uri
        and check_url(r, "redirect_uri", redirect_uri)
        and public_origin
        and origin_of(redirect_uri) != public_origin
    ):
        r.problem("redirect_uri", f"must be on public_origin {public_origin}")
    post_logout = r.get("post_logout_redirect_uri", str, "") or None
    if (
        post_logout
        and check_url(r, "post_logout_redirect_uri", post_logout)
        and public_origin
        and origin_of(post_logout) != public_origin
    ):
        r.problem("post_logout_redirect_uri", f"must be on public_origin {public_origin}")
    algs = r.string_list("id_token_signing_algs", OIDCSettings.id_token_signing_algs)
    for i, alg in enumerate(algs):
        if alg not in ALLOWED_SIGNING_ALGS:
            r.problem(
                f"id_token_signing_algs[{i}]",
                f"{alg!r} is refused; allowed: {', '.join(ALLOWED_SIGNING_ALGS)} (never 'none' or HS*, RFC 8725 3.1)",
            )
    if not algs:
        r.problem("id_token_signing_algs", "must not be empty")
    trusted_audiences = r.string_list("trusted_audiences", ())
    for i, audience in enumerate(trusted_audiences):
        if not audience:
            r.problem(f"trusted_audiences[{i}]", "must not be empty")
        elif audience == client_id:
            r.problem(f"trusted_audiences[{i}]", "is client_id, which is always an accepted audience")
    skew = r.converted("clock_skew", parse_duration, 60.0)
    if skew > 300:
        r.problem("clock_skew", "must not exceed 5m")
    timeout = r.converted("timeout", parse_duration, 10.0)
    if timeout <= 0:  # every IdP call, and every wait for a token refresh, would fail at once
        r.problem("timeout", "must be positive")
    extra = r.string_map("extra_auth_params")
    for reserved in (
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
        "redirect_uri",
        "client_id",
        "response_type",
        "scope",
    ):
        if reserved in extra:
            r.problem(f"extra_auth_params.{reserved}", "is set by bff and may not be overridden")
    ca_bundle = r.get("ca_bundle", str, "") or None
    if ca_bundle and not Path(ca_bundle).is_file():
        r.problem("ca_bundle", f"file not found: {ca_bundle}")
    user_claims = r.string_list("user_claims", OIDCSettings.user_claims)
    r.finish()
    return OIDCSettings(
        issuer=issuer.rstrip("/") if issuer.endswith("/") and issuer.count("/") > 3 else issuer,
        client_id=client_id,
        client_secret=Secret(secret_value) if secret_value else None,
        token_endpoint_auth_method=method,  # type: ignore[arg-type]
        private_key_file=key_file,
        scopes=scopes,
        redirect_uri=redirect_uri,
        post_logout_redirect_uri=post_logout,
        id_token_signing_algs=algs,
        trusted_audiences=trusted_audiences,
        clock_skew=skew,
        timeout=timeout,
        extra_auth_params=extra,
        ca_bundle=ca_bundle,
        user_claims=user_claims,
    )


def normalize_prefix(path: str) -> str:
    return "/" + "/".join(seg for seg in path.split("/") if seg)


def _routes(root: Reader) -> tuple[RouteSettings, ...]:
    root.seen.add("routes")
    raw = root.data.get("routes", [])
    if not isinstance(raw, list):
        root.problem("routes", "expected an array of tables ([[routes]])")
        return ()
    routes: list[RouteSettings] = []
    prefixes: dict[str, int] = {}
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            root.problem(f"routes[{index}]", "expected a table")
            continue
        r = Reader(item, f"routes[{index}]", root.problems, root.env)
        path = r.get("path", str, "", required=True)
        if path:
            if (
                not path.startswith("/")
                or any(seg in (".", "..") for seg in path.split("/"))
                or any(c in path for c in "?#%\\;@*")
                or any(ord(c) < 0x21 or ord(c) == 0x7F for c in path)
            ):
                r.problem("path", f"must be a plain absolute path prefix like /api/orders, got {path!r}")
            else:
                path = normalize_prefix(path)
                if path == "/":
                    r.problem("path", "must not be '/': it would shadow the SPA and bff's own endpoints")
                elif any(path == p or path.startswith(p + "/") for p in RESERVED_PREFIXES):
                    r.problem("path", f"overlaps bff's own endpoints ({', '.join(RESERVED_PREFIXES)})")
                elif path in prefixes:
                    r.problem("path", f"duplicates routes[{prefixes[path]}].path {path!r}")
                else:
                    prefixes[path] = index
        upstream = r.get("upstream", str, "", required=True)
        if upstream:
            check_url(r, "upstream", upstream)
            if urlsplit(upstream).query:
                r.problem("upstream", "must not contain a query string")
        token = r.get("token", str, "user")
        if token not in TOKEN_POLICIES:
            r.problem("token", f"expected one of {', '.join(TOKEN_POLICIES)}, got {token!r}")
            token = "user"
        methods = tuple(m.upper() for m in r.string_list("methods", ()))
        for i, m in enumerate(methods):
            if m not in HTTP_METHODS:
                r.problem(f"methods[{i}]", f"unknown HTTP method {m!r}")
        set_headers = r.string_map("set_headers")
        remove_headers = r.string_list("remove_headers", ())
        for name in [*set_headers, *remove_headers]:
            if not HEADER_NAME.match(name):
                r.problem("set_headers", f"invalid header name {name!r}")
            elif name.lower() in ("authorization", "cookie", "host", "content-length", "transfer-encoding"):
                r.problem("set_headers", f"{name} is managed by bff and may not be set or removed per route")
        ca_bundle = r.get("ca_bundle", str, "") or None
        if ca_bundle and not Path(ca_bundle).is_file():
            r.problem("ca_bundle", f"file not found: {ca_bundle}")
        resource = r.get("resource", str, "") or None
        if resource:
            check_url(r, "resource", resource)
        anonymous = r.get("anonymous", bool, False)
        if "anonymous" in item and token != "client":
            r.problem(
                "anonymous",
                "applies only to token = 'client' (routes with token 'none' or 'user_or_none' always serve callers"
                " without a session, 'user' never does)",
            )
        route = RouteSettings(
            path=path,
            upstream=upstream.rstrip("/"),
            token=token,  # type: ignore[arg-type]
            strip_prefix=r.get("strip_prefix", bool, True),
            methods=methods,
            connect_timeout=r.converted("connect_timeout", parse_duration, 5.0),
            timeout=r.converted("timeout", parse_duration, 30.0),
            max_body=r.converted("max_body", parse_size, 10 * 1024 * 1024),
            set_headers=set_headers,
            remove_headers=tuple(h.lower() for h in remove_headers),
            ca_bundle=ca_bundle,
            resource=resource,
            scopes=r.string_list("scopes", ()),
            refresh_on_401=r.get("refresh_on_401", bool, False),
            anonymous=anonymous,
        )
        r.finish()
        routes.append(route)
    return tuple(routes)


def _tokens(root: Reader, oidc_timeout: float) -> TokenSettings:
    r = table(root, "tokens")
    leeway = r.converted("refresh_leeway", parse_duration, 30.0)
    lease = r.converted("refresh_lock_lease", parse_duration, 5.0)
    refresh_timeout = r.converted("refresh_timeout", parse_duration, max(60.0, oidc_timeout))
    replay = r.converted("replay_limit", parse_size, 64 * 1024)
    if lease < 0.1:
        r.problem("refresh_lock_lease", "must be at least 100ms")
    if refresh_timeout < oidc_timeout:
        # A refresh cut short before the request's own deadline would leave its outcome unknown for nothing.
        r.problem("refresh_timeout", f"must be at least oidc.timeout ({oidc_timeout:g}s)")
    if refresh_timeout > 600:
        r.problem("refresh_timeout", "must not exceed 10m (the session's refresh lock is held that long)")
    if replay > 10 * 1024 * 1024:
        r.problem("replay_limit", "must not exceed 10MiB (replayable bodies are held in memory)")
    r.finish()
    return TokenSettings(
        refresh_leeway=leeway, refresh_lock_lease=lease, refresh_timeout=refresh_timeout, replay_limit=replay
    )


def _frontend(root: Reader) -> FrontendSettings | None:
    if "frontend" not in root.data:
        root.seen.add("frontend")
        return None
    r = table(root, "frontend")
    directory = r.get("directory", str, "") or None
    dev_server = r.get("dev_server", str, "") or None
    if directory and dev_server:
        r.problem("directory", "set either directory or dev_server, not both")
    if directory and not Path(directory).is_dir():
        r.problem("directory", f"directory not found: {directory}")
    if dev_server:
        check_url(r, "dev_server", dev_server)
    r.finish()
    return FrontendSettings(directory=directory, dev_server=dev_server)


def parse_config(data: Mapping[str, Any], *, env: Mapping[str, str] | None = None, source: str = "<memory>") -> Config:
    """Validate an already-parsed TOML document; raise ConfigError listing every problem."""
    problems: list[str] = []
    root = Reader(data, "", problems, os.environ if env is None else env)
    server = _server(root)
    session = _session(root)
    oidc = _oidc(root, server.public_origin)
    routes = _routes(root)
    frontend = _frontend(root)
    tokens = _tokens(root, oidc.timeout)
    root.finish()
    if problems:
        raise ConfigError(problems)
    return Config(
        server=server, session=session, oidc=oidc, routes=routes, frontend=frontend, tokens=tokens, source=source
    )


def load_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate one TOML file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read the file ({exc.strerror or exc})"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{p}: not UTF-8 text"]) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{p}: not valid TOML ({exc})"]) from exc
    return parse_config(data, env=env, source=str(p))
