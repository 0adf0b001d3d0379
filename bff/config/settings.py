"""The configuration's value objects: one frozen dataclass per TOML section, each default stated here once.

The validators (``bff.config.server`` and its siblings) read a missing key's default from these dataclasses, so a
default changed here is the default everywhere, in ``docs/configuration.md`` too (a test compares them). The
enumerations, bounds and :class:`Secret` they are made of are ``bff.config.values``. Standard library only.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from bff.config.values import (
    AuthMethod,
    LogFormat,
    LogLevel,
    OIDCProfile,
    ParMode,
    RequestObjectMode,
    SameSite,
    Secret,
    TokenPolicy,
)


@dataclass(frozen=True)
class ServerSettings:
    #: Address to bind (``listen = "host:port"`` in the file; ``":port"`` is every IPv4 interface).
    host: str = "127.0.0.1"
    #: Port to bind (``listen = "host:port"`` in the file).
    port: int = 8000
    #: The SPA's origin exactly as the browser sees it: builds ``redirect_uri`` and is the only ``Origin``
    #: accepted. https, or http only for localhost/127.0.0.1.
    public_origin: str = "http://localhost:8000"
    #: CIDRs of reverse proxies whose ``X-Forwarded-For``/``-Proto``/``-Host`` are believed. Empty: none.
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
    #: After SIGTERM/SIGINT, ``/readyz`` answers 503 at once while new connections and requests are still served for
    #: this long, so that the load balancer stops sending before the listener closes.
    drain_delay: float = 5.0
    #: After the drain, requests in flight get this long to finish; streams still open then are ended, and the
    #: process exits. A process stops within ``drain_delay + shutdown_timeout`` plus a few seconds.
    shutdown_timeout: float = 25.0


@dataclass(frozen=True)
class SessionSettings:
    #: Key ring for cookie signing and encryption at rest: at least 32 random characters each, newest last.
    keys: tuple[Secret, ...]
    #: Where sessions live: ``redis://``, ``rediss://``, ``redis+sentinel://``, ``redis+cluster://`` (``rediss+``
    #: for TLS), ``unix://``, or ``memory://`` (one process only; sessions vanish on restart).
    store: str = "memory://"
    #: Name of the session cookie; must start with ``__Host-`` (Secure, Path=/, no Domain).
    cookie_name: str = "__Host-bff"
    #: ``SameSite`` of the session cookie; ``none`` is refused.
    same_site: SameSite = "strict"
    #: A session unused this long ends (sliding); at most ``absolute_timeout``.
    idle_timeout: float = 30 * 60
    #: A session ends this long after login, however active.
    absolute_timeout: float = 12 * 3600
    #: How long a started login may take before its state expires (one-time, bound to the browser).
    login_timeout: float = 10 * 60
    #: Logins one browser may have pending at once (one login cookie each; starting another drops the oldest).
    max_pending_logins: int = 5
    #: How long to wait for the store before answering 503 (the session is kept).
    store_timeout: float = 2.0
    #: Bytes: the largest reply (a session record) accepted from Redis on the per-request session read.
    store_max_reply: int = 1024 * 1024
    #: Format of what bff writes to the store (1 or 2; every known format is read): the newest the previous release
    #: reads, so a rolling update works; raise it once every instance runs this release (docs/storage-formats.md).
    write_format: int = 1
    #: Redis replicas that must confirm a write (``WAIT``) before bff relies on it, so that a failover cannot lose
    #: a refresh lock or rotated tokens; 0: the primary's answer is enough. Not on Redis Cluster.
    store_replicas: int = 0


@dataclass(frozen=True)
class OIDCSettings:
    #: The IdP's issuer; discovery is read from ``{issuer}/.well-known/openid-configuration``.
    issuer: str
    #: This client's ID at the IdP.
    client_id: str
    #: This client's secret; required for ``client_secret_basic`` and ``client_secret_post``.
    client_secret: Secret | None = None
    #: How bff authenticates to the token endpoint (``private_key_jwt`` needs ``private_key_file``;
    #: ``tls_client_auth`` and ``self_signed_tls_client_auth``, RFC 8705 2, need ``client_cert`` and ``client_key``).
    token_endpoint_auth_method: AuthMethod = "client_secret_basic"
    #: PEM private key file for ``private_key_jwt``.
    private_key_file: str | None = None
    #: Scopes of the authorization request; must include ``openid``.
    scopes: tuple[str, ...] = ("openid", "profile", "email", "offline_access")
    #: The callback URL registered at the IdP; empty: ``public_origin`` + ``/bff/callback``. Must be on
    #: ``public_origin``.
    redirect_uri: str = ""
    #: Where the IdP sends the browser after logout; must be on ``public_origin``. Left out: ``public_origin`` + ``/``.
    post_logout_redirect_uri: str | None = None
    #: Allow-list for ID and logout token signatures; ``none`` and HS* are always refused (RFC 8725 3.1).
    id_token_signing_algs: tuple[str, ...] = ("RS256", "ES256")
    #: Audiences besides ``client_id`` that an ID or logout token may also name (OpenID Connect Core 3.1.3.7 step 3);
    #: a token naming any other is refused. Empty: the client trusts no other audience.
    trusted_audiences: tuple[str, ...] = ()
    #: Leeway for ``exp``/``iat``/``nbf`` checks (clock skew between bff and the IdP).
    clock_skew: float = 60.0
    #: Timeout of each call to the IdP, and how long a request waits for its session's token refresh (then 503).
    timeout: float = 10.0
    #: Extra parameters for the authorization request (e.g. ``prompt``, ``audience``); never ``state``/``nonce``.
    extra_auth_params: Mapping[str, str] = field(default_factory=dict)
    #: CA bundle for an IdP behind a private CA.
    ca_bundle: str | None = None
    #: Ask for DPoP-bound tokens (RFC 9449) at the token endpoint, and send them to routes as ``Authorization: DPoP``
    #: with a fresh proof per request (a route's ``dpop`` overrides it). Needs ``dpop_key_file``. docs/dpop.md.
    dpop: bool = False
    #: PEM EC P-256 private key that signs bff's DPoP proofs; the same file on every instance.
    dpop_key_file: str | None = None
    #: PEM certificate (chain) bff presents on its TLS connections to the IdP (mutual TLS, RFC 8705); with
    #: ``client_key``. The IdP's ``mtls_endpoint_aliases`` are then used (RFC 8705 5).
    client_cert: str | None = None
    #: PEM private key of ``client_cert``; may be encrypted (``client_key_password``).
    client_key: str | None = None
    #: Passphrase of an encrypted ``client_key``; give it as ``${VAR}`` from the environment.
    client_key_password: Secret | None = None
    #: Pushed authorization requests (RFC 9126): ``auto`` uses them when the IdP advertises a
    #: ``pushed_authorization_request_endpoint``; ``required`` refuses to start without one; ``off`` never pushes
    #: (refused when the IdP's metadata says ``require_pushed_authorization_requests``). docs/par-fapi2.md.
    par: ParMode = "auto"
    #: Signed request objects (JAR, RFC 9101), signed with ``private_key_file``: ``auto`` signs when the IdP's
    #: metadata says ``require_signed_request_object``; ``always`` signs every authorization request; ``off`` never.
    request_object: RequestObjectMode = "auto"
    #: ``fapi2``: FAPI 2.0 Security Profile for a confidential client: PAR required, PKCE S256, ``private_key_jwt``
    #: or mTLS client authentication, sender-constrained tokens (``dpop`` or ``client_cert``), ``iss`` in the
    #: authorization response, PS256/ES256/EdDSA only; bff refuses to start with an IdP that cannot support it.
    profile: OIDCProfile = "none"
    #: ``acr_values`` a step-up login may ask for (RFC 9470, docs/step-up.md), from ``/bff/login?acr_values=`` or an
    #: upstream's ``insufficient_user_authentication`` challenge; others are refused (400) or passed through (the
    #: upstream's 401). Empty: any value of the safe syntax.
    acr_values_allowed: tuple[str, ...] = ()
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
class ExchangeSettings:
    """A route's ``exchange = { ... }``: the user's access token is exchanged for one limited to this upstream."""

    #: RFC 8693 ``audience``: the logical name of the upstream the exchanged token is for (its ``aud``).
    audience: str | None = None
    #: RFC 8693 / RFC 8707 ``resource``: the upstream's URI, when the IdP names targets by URI.
    resource: str | None = None
    #: RFC 8693 ``scope`` of the exchanged token, space-separated; empty: the IdP's choice.
    scope: str | None = None


@dataclass(frozen=True)
class RouteSettings:
    #: The path prefix on the SPA's origin; matches whole segments (``/api/orders`` never matches ``/api/ordersX``).
    path: str
    #: The upstream base URL requests under ``path`` are forwarded to.
    upstream: str
    #: ``user``: the user's token (401 without a session); ``user_or_none``: the token if logged in;
    #: ``client``: bff's client-credentials token; ``none``: never a token.
    token: TokenPolicy = "user"
    #: Drop ``path`` before forwarding (``/api/orders/7`` -> ``{upstream}/7``).
    strip_prefix: bool = True
    #: Allowed methods; empty means every method bff relays (GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS).
    methods: tuple[str, ...] = ()
    #: Longest wait to connect to the upstream.
    connect_timeout: float = 5.0
    #: Longest wait for the upstream (its answer, each read of its body); restarted while an upload progresses.
    timeout: float = 30.0
    #: Largest accepted request body; 413 beyond it.
    max_body: int = 10 * 1024 * 1024
    #: Headers added to every forwarded request.
    set_headers: Mapping[str, str] = field(default_factory=dict)
    #: Headers dropped before forwarding.
    remove_headers: tuple[str, ...] = ()
    #: CA bundle for an upstream behind a private CA.
    ca_bundle: str | None = None
    #: Forward proxy to the upstream, ``http://[user:password@]host:port`` (https upstreams through ``CONNECT``);
    #: ``""``: always direct. Left out: ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` and ``NO_PROXY`` from the
    #: environment, with the rules the IdP calls follow (httpx's).
    proxy: str | None = field(default=None, repr=False)  # its URL may carry the proxy's password
    #: RFC 8707 resource indicator for a token of this route's own.
    resource: str | None = None
    #: Scopes for a token of this route's own (with ``resource``, or for ``token = "client"``).
    scopes: tuple[str, ...] = ()
    #: Refresh and replay on a plain 401 too, not only on ``WWW-Authenticate: Bearer error="invalid_token"``.
    refresh_on_401: bool = False
    #: ``token = "client"`` only: serve callers without a session too (bff's own token then works for anyone).
    anonymous: bool = False
    #: Send the token as ``Authorization: DPoP`` with a proof (RFC 9449 7.1); ``true`` needs ``[oidc] dpop``.
    #: Left out: ``[oidc] dpop``.
    dpop: bool | None = None
    #: PEM certificate (chain) bff presents to this route's upstream (mutual TLS); with ``client_key``.
    client_cert: str | None = None
    #: PEM private key of ``client_cert``; may be encrypted (``client_key_password``).
    client_key: str | None = None
    #: Passphrase of an encrypted ``client_key``; give it as ``${VAR}`` from the environment.
    client_key_password: Secret | None = field(default=None, repr=False)
    #: The upstream accepts only certificate-bound tokens (RFC 8705 3): the token names ``[oidc] client_cert`` in
    #: ``cnf.x5t#S256``, so ``client_cert`` must be that same certificate (checked at start).
    certificate_bound: bool = False
    #: Also relay WebSocket handshakes on this route (docs/websockets.md); HTTP requests are proxied as ever.
    websocket: bool = False
    #: ``websocket`` only: largest WebSocket message either way; a bigger one closes the socket with 1009.
    max_message: int = 1024 * 1024
    #: ``websocket`` only: a socket without a message either way for this long is closed with 4408.
    idle_timeout: float = 300.0
    #: ``websocket`` only: how often each open socket re-reads its session, so a logout anywhere (or a token that
    #: can no longer be refreshed) closes it with 4401 within about this long. One store read per socket each time.
    session_check: float = 0.5
    #: RFC 8693 token exchange (``token = "user"``/``"user_or_none"`` only): send this route a token the IdP
    #: issues for ``{ audience = "...", resource = "...", scope = "..." }`` in exchange for the user's token.
    exchange: ExchangeSettings | None = None


@dataclass(frozen=True)
class TokenSettings:
    #: Refresh an access token this long before it expires (proactive refresh).
    refresh_leeway: float = 30.0
    #: Lease of the cross-process refresh lock; renewed every third of it while the IdP call runs.
    refresh_lock_lease: float = 5.0
    #: How long a refresh call may take at the IdP. A request waits only ``[oidc] timeout`` for it (then 503); the
    #: refresh itself goes on to this deadline, so a slow IdP's answer (a rotated refresh token) is kept. Left out:
    #: this default, or ``[oidc] timeout`` when that is longer.
    refresh_timeout: float = 60.0
    #: Requests with bodies up to this size are kept so they can be replayed after a 401 and a refresh.
    replay_limit: int = 64 * 1024


@dataclass(frozen=True)
class FrontendSettings:
    #: The SPA's built files (``index.html`` for client-side routes); either this or ``dev_server``.
    directory: str | None = None
    #: The frontend's dev server (HTTP and its hot-reload WebSocket), when developing.
    dev_server: str | None = None


@dataclass(frozen=True)
class FrontendEntrySettings:
    """One ``[[frontends]]`` entry: an SPA with its own origin, cookie, IdP client and routes (docs/frontends.md)."""

    #: The frontend's name, ``[a-z0-9-]``, unique: it namespaces its store keys and is bound into its cookies.
    name: str
    #: The SPA's origin exactly as the browser sees it (as ``[server] public_origin`` for a single frontend).
    public_origin: str
    #: Its session cookie's name, ``__Host-`` and unique among the frontends.
    cookie_name: str
    #: Its identity provider and client (the keys of ``[oidc]``).
    oidc: OIDCSettings
    #: Selects the frontend by the request's ``Host`` (case-insensitive, with the port unless it is the scheme's
    #: default); must be ``public_origin``'s. Empty: any host.
    host: str = ""
    #: Selects the frontend by a path prefix (whole segments), stripped before its endpoints and routes see the path.
    #: Empty: every path of its host.
    path_prefix: str = ""
    #: Its routes (the keys of ``[[routes]]``).
    routes: tuple[RouteSettings, ...] = ()
    #: Its SPA (the keys of ``[frontend]``); left out: none.
    frontend: FrontendSettings | None = None


@dataclass(frozen=True)
class LoggingSettings:
    #: ``text``: one human-readable line per record; ``json``: one JSON object per line (OpenTelemetry log data model
    #: field names: ``timestamp``, ``severity_text``, ``body``, ``logger``, each extra field under its own key), for
    #: every logger, uvicorn's included. Either way tokens, codes, secrets and cookies are masked first.
    format: LogFormat = "text"
    #: Lowest severity written: ``debug``, ``info``, ``warning`` or ``error``; ``bff serve --log-level`` overrides it.
    level: LogLevel = "info"
    #: One access line per request on stdout (JSON with ``format = "json"``): request id, route, method, path without
    #: the query, status, upstream status, durations, bytes, error code, a short session handle; never a token,
    #: cookie or query value. ``bff serve --access-log`` turns it on too. Also turns request ids on.
    access_log: bool = False


@dataclass(frozen=True)
class MetricsSettings:
    #: ``"host:port"`` of a separate listener serving Prometheus ``/metrics`` (e.g. ``"0.0.0.0:9464"``); empty: no
    #: metrics. Never the ``[server] listen`` address: keep it off the public origin. Also turns request ids on.
    listen: str = ""

    def address(self) -> tuple[str, int] | None:
        """``(host, port)`` of the metrics listener, or None when metrics are off."""
        if not self.listen:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(frozen=True)
class TracingSettings:
    #: Export OpenTelemetry traces (needs the ``bff[otel]`` extra): a server span per request with child spans for
    #: the store, a token refresh, the upstream and the IdP; W3C ``traceparent`` sent to upstreams and the IdP. The
    #: exporter, sampler and service name come from the standard ``OTEL_*`` variables (``OTEL_SDK_DISABLED=true``
    #: turns tracing off again).
    enabled: bool = False
    #: Continue a trace the browser started (its ``traceparent``/``tracestate``). Off: every request starts a new
    #: trace and links the browser's, so nobody on the internet picks bff's trace ids or sampling decisions.
    propagate_from_browser: bool = False


@dataclass(frozen=True)
class Config:
    server: ServerSettings
    session: SessionSettings
    oidc: OIDCSettings
    routes: tuple[RouteSettings, ...] = ()
    frontend: FrontendSettings | None = None
    tokens: TokenSettings = field(default_factory=TokenSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    tracing: TracingSettings = field(default_factory=TracingSettings)
    #: ``[[frontends]]``: several SPAs in one deployment; empty: the single frontend of ``[oidc]`` and ``[[routes]]``.
    frontends: tuple[FrontendEntrySettings, ...] = ()
    source: str = "<memory>"
