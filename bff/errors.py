"""The one exception tree of bff. A leaf module: it imports nothing from the package.

Every class carries a machine-readable ``error`` code and the HTTP ``status`` the app answers with, so the SPA can
branch on ``error`` and never has to parse a message. Messages are for operators: they never contain a token, a
code, a secret or an upstream's internals.

    BffError
    ├── ConfigError                      (not an HTTP error: the process exits 2)
    ├── BadRequest                  400  bad_request
    │   ├── InvalidPath             400  invalid_path
    │   ├── LoginFailed             400  login_failed
    │   │   ├── IdPError            400  idp_error        (error=... on the callback)
    │   │   ├── InvalidState        400  invalid_state
    │   │   │   └── LoginExpired    400  invalid_state    (the login outlived login_timeout)
    │   │   ├── InvalidIdToken      400  invalid_id_token
    │   │   └── StepUpFailed        400  step_up_failed   (a step-up login fell short, RFC 9470; the session is kept)
    │   │       └── NonceMismatch   400  invalid_id_token (the ID token is not this login's: OIDC Core 3.1.3.7)
    │   ├── InvalidLogoutToken      400  invalid_logout_token
    │   └── LogoutExpired           400  logout_expired   (a used, expired or unknown logout continuation URL)
    ├── CsrfRejected                401  csrf
    ├── StepUpRequired              401  step_up_required (an upstream asks for a stronger or fresher login, RFC 9470)
    ├── Unauthenticated             401  unauthenticated
    │   ├── SessionExpired          401  session_expired
    │   └── SessionFormatUnsupported 401 session_format_unsupported (written by a newer release; the record is kept)
    ├── Forbidden                   403  forbidden
    ├── NotFound                    404  not_found
    │   └── UnknownFrontend         404  unknown_frontend (no [[frontends]] entry selects the host and path)
    ├── MethodNotAllowed            405  method_not_allowed
    ├── RequestTimeout              408  request_timeout  (from the HTTP server: the request head came too slowly)
    ├── PayloadTooLarge             413  payload_too_large
    ├── RequestHeaderTooLarge       431  request_header_too_large (from the HTTP server)
    ├── UpstreamError               502  bad_gateway
    │   ├── UpstreamTimeout         504  upstream_timeout
    │   ├── UpstreamTLSError        502  upstream_tls_error     (handshake failed; client certificate refused)
    │   └── UpstreamProxyError      502  upstream_proxy_error   (the forward proxy is unreachable or broke CONNECT)
    │       └── UpstreamProxyRefused 502 upstream_proxy_refused (the proxy answered CONNECT with 407, 403, 502, ...)
    ├── OAuthError                  (from the token/revocation endpoints)
    │   ├── InvalidGrant            401  session_expired  (fatal for the session)
    │   ├── PushedAuthorizationFailed 502 idp_par_failed (RFC 9126: the IdP refused or garbled the pushed request)
    │   ├── TokenExchangeRefused    502  token_exchange_refused (RFC 8693: the IdP refuses this route's exchange)
    │   │   └── TokenExchangeDenied 401  token_exchange_denied  (the IdP refuses the user's token; session kept)
    │   └── IdPUnavailable          503  temporarily_unavailable (not fatal; retried later)
    │       └── InvalidProviderMetadata 503  temporarily_unavailable (discovery answer unusable: a misconfiguration)
    ├── JoseError-like failures are raised as InvalidIdToken / InvalidLogoutToken
    └── ServiceUnavailable          503  temporarily_unavailable
        ├── SessionStoreUnavailable 503  temporarily_unavailable
        ├── NotReady                503  not_ready
        └── TooManyConnections      503  too_many_connections (from the HTTP server)
"""

from __future__ import annotations


class BffError(Exception):
    """Root of every error bff raises on purpose."""

    error: str = "internal_error"
    status: int = 500
    #: Seconds the client should wait before retrying (sent as ``Retry-After``), when it makes sense.
    retry_after: int | None = None

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.error)
        self.message = message or self.error

    def details(self) -> dict[str, str | int]:
        """Fields the JSON answer carries besides ``error`` and ``message`` (none unless a class says so)."""
        return {}


#: The exit status of a command refused for its configuration (``bff check``, ``bff serve``, ...).
EXIT_CONFIG = 2


class ConfigError(BffError):
    """The configuration is invalid. ``problems`` holds every problem found, each prefixed with its key path."""

    error = "config_error"

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in self.problems))


class BadRequest(BffError):
    error = "bad_request"
    status = 400


class InvalidPath(BadRequest):
    error = "invalid_path"


class LoginFailed(BadRequest):
    error = "login_failed"


class IdPError(LoginFailed):
    """The IdP answered the authorization request with ``error=...`` (RFC 6749 4.1.2.1)."""

    error = "idp_error"


class InvalidState(LoginFailed):
    error = "invalid_state"


class LoginExpired(InvalidState):
    """The login's ``login_timeout`` passed before its callback (same code: the SPA's remedy is the same)."""


class InvalidIdToken(LoginFailed):
    error = "invalid_id_token"


class NonceMismatch(InvalidIdToken):
    """The ID token's ``nonce`` is missing or not the one this login sent (OpenID Connect Core 3.1.3.7 step 11)."""


class StepUpFailed(LoginFailed):
    """A step-up login came back without what it asked for: another ``acr``, no or a too old ``auth_time``, or
    another user (OpenID Connect Core 3.1.3.7 steps 12-13, RFC 9470 4). The session it was to raise is kept."""

    error = "step_up_failed"


class InvalidLogoutToken(BadRequest):
    error = "invalid_logout_token"


class LogoutExpired(BadRequest):
    error = "logout_expired"


class CsrfRejected(BffError):
    error = "csrf"
    status = 401


class StepUpRequired(BffError):
    """An upstream refused the session's token for too weak or too old an authentication (RFC 9470 3). The SPA
    navigates to ``login_url`` to log in again with the upstream's ``acr_values``/``max_age``; the session stays."""

    error = "step_up_required"
    status = 401

    def __init__(self, message: str, *, acr_values: str | None, max_age: int | None, login_url: str) -> None:
        super().__init__(message)
        self.acr_values = acr_values
        self.max_age = max_age
        self.login_url = login_url

    def details(self) -> dict[str, str | int]:
        out: dict[str, str | int] = {"login_url": self.login_url}
        if self.acr_values is not None:
            out["acr_values"] = self.acr_values
        if self.max_age is not None:
            out["max_age"] = self.max_age
        return out


class Unauthenticated(BffError):
    error = "unauthenticated"
    status = 401


class SessionExpired(Unauthenticated):
    error = "session_expired"


class SubjectChanged(SessionExpired):
    """A refreshed ID token names another user than the session's (OpenID Connect Core 12.2): the session ended. The
    browser sees ``session_expired``; telemetry says ``sub_mismatch``."""


class SessionFormatUnsupported(Unauthenticated):
    """The session record is in a format this release does not read (docs/storage-formats.md). The record is left
    in the store: an instance of the release that wrote it still serves the session."""

    error = "session_format_unsupported"


class Forbidden(BffError):
    error = "forbidden"
    status = 403


class NotFound(BffError):
    error = "not_found"
    status = 404


class UnknownFrontend(NotFound):
    error = "unknown_frontend"


class MethodNotAllowed(BffError):
    error = "method_not_allowed"
    status = 405


class RequestTimeout(BffError):
    """The request head was not complete in time (RFC 9110 15.5.9)."""

    error = "request_timeout"
    status = 408


class RequestHeaderTooLarge(BffError):
    """The request head has too many bytes or too many fields (RFC 6585 5)."""

    error = "request_header_too_large"
    status = 431


class PayloadTooLarge(BffError):
    error = "payload_too_large"
    status = 413


class UpstreamError(BffError):
    error = "bad_gateway"
    status = 502


class UpstreamTimeout(UpstreamError):
    error = "upstream_timeout"
    status = 504


class UpstreamTLSError(UpstreamError):
    """The TLS handshake with the upstream failed: its certificate was not trusted, or it refused bff's client
    certificate (none, expired, or of a CA it does not trust: mutual TLS, RFC 8705)."""

    error = "upstream_tls_error"


class UpstreamProxyError(UpstreamError):
    """The forward proxy to the upstream could not be reached, or its answer to ``CONNECT`` was unusable."""

    error = "upstream_proxy_error"


class UpstreamProxyRefused(UpstreamProxyError):
    """The forward proxy refused the tunnel (407 credentials, 403 policy, 502/504 the upstream unreachable)."""

    error = "upstream_proxy_refused"


class OAuthError(BffError):
    """An error answer from the IdP's token, revocation or metadata endpoints."""

    error = "oauth_error"
    status = 502

    def __init__(self, message: str = "", *, oauth_error: str | None = None) -> None:
        super().__init__(message)
        #: The ``error`` field of the IdP's answer (RFC 6749 5.2), when it sent one.
        self.oauth_error = oauth_error


class InvalidGrant(OAuthError):
    """The grant (code or refresh token) is invalid, expired, revoked or reused: fatal for the session."""

    error = "session_expired"
    status = 401


class PushedAuthorizationFailed(OAuthError):
    """The PAR endpoint (RFC 9126) refused the login's authorization request, or answered something that is not a
    usable ``request_uri``; the login cannot start (nothing was stored, the browser may simply try again)."""

    error = "idp_par_failed"
    status = 502


class TokenExchangeRefused(OAuthError):
    """The IdP refused a route's token exchange (``invalid_target``, ``unauthorized_client``, ``invalid_scope``,
    ``invalid_request``, ...): a configuration problem between bff and the IdP that logging in again cannot fix."""

    error = "token_exchange_refused"
    status = 502


class TokenExchangeDenied(TokenExchangeRefused):
    """The IdP refused the user's token as the exchange's subject (``invalid_grant``, ``invalid_token``). The session
    is kept: other routes may still work, and logging in again gives the IdP a fresh subject token."""

    error = "token_exchange_denied"
    status = 401


class ServiceUnavailable(BffError):
    error = "temporarily_unavailable"
    status = 503
    retry_after = 5


class IdPUnavailable(ServiceUnavailable, OAuthError):
    """The IdP timed out, answered 5xx or garbage: not fatal, the session is kept."""

    error = "temporarily_unavailable"
    status = 503


class SessionStoreUnavailable(ServiceUnavailable):
    """The session store did not answer (connection refused, timeout): the session is kept."""


class NotReady(ServiceUnavailable):
    error = "not_ready"


class TooManyConnections(ServiceUnavailable):
    """The worker holds as many connections as it may; a new one is answered and closed at once."""

    error = "too_many_connections"
    retry_after = 1


class InvalidProviderMetadata(IdPUnavailable):
    """The IdP's discovery document is unusable (issuer mismatch, insecure or missing endpoint): almost always a
    misconfiguration, so the app may refuse to start instead of retrying."""
