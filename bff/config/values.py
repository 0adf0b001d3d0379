"""The values settings are made of: the enumerations a key may take (a ``Literal`` and the tuple of its members,
which the validators check against), the algorithm allow-lists, the bounds, and :class:`Secret`.

Shared by the settings dataclasses (``bff.config.settings``), their validators and the domain code that needs a
list (``bff.oidc``'s algorithms, ``bff.session.record``'s store formats). Standard library only.
"""

from __future__ import annotations

from typing import Literal, get_args

TokenPolicy = Literal["user", "client", "user_or_none", "none"]
AuthMethod = Literal[
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
    "tls_client_auth",
    "self_signed_tls_client_auth",
    "none",
]
SameSite = Literal["strict", "lax"]
ParMode = Literal["auto", "required", "off"]
RequestObjectMode = Literal["auto", "always", "off"]
OIDCProfile = Literal["none", "fapi2"]
LogFormat = Literal["text", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]

# Each enumeration's members, in the Literal's order, for the validators to check against and name.
TOKEN_POLICIES: tuple[TokenPolicy, ...] = get_args(TokenPolicy)
AUTH_METHODS: tuple[AuthMethod, ...] = get_args(AuthMethod)
#: RFC 8705 2: the client authenticates with the certificate of its TLS connection (``[oidc] client_cert``).
TLS_AUTH_METHODS: tuple[AuthMethod, ...] = ("tls_client_auth", "self_signed_tls_client_auth")
SAME_SITES: tuple[SameSite, ...] = get_args(SameSite)
PAR_MODES: tuple[ParMode, ...] = get_args(ParMode)
REQUEST_OBJECT_MODES: tuple[RequestObjectMode, ...] = get_args(RequestObjectMode)
OIDC_PROFILES: tuple[OIDCProfile, ...] = get_args(OIDCProfile)
#: FAPI 2.0 Security Profile 5.4.1: the only signing algorithms it allows.
FAPI2_SIGNING_ALGS = ("PS256", "ES256", "EdDSA")
#: Algorithms bff signs request objects with (RFC 9101), in order of preference.
REQUEST_OBJECT_ALGS = ("PS256", "ES256", "RS256")
LOG_FORMATS: tuple[LogFormat, ...] = get_args(LogFormat)
LOG_LEVELS: tuple[LogLevel, ...] = get_args(LogLevel)
#: Asymmetric algorithms only (RFC 8725 3.1): "none" and HMAC are never accepted for ID or logout tokens.
ALLOWED_SIGNING_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
#: Paths bff answers itself; a route may not shadow them.
RESERVED_PREFIXES = ("/bff", "/healthz", "/readyz")
MIN_KEY_LENGTH = 32
#: Bound of ``[session] store_replicas``: more replicas than a Redis deployment has would fail every write.
MAX_STORE_REPLICAS = 16
#: Bound of ``[session] max_pending_logins``: each pending login is a cookie of up to ~3 KB on every request.
MAX_PENDING_LOGINS = 20
#: Store formats this release writes (``[session] write_format``); it reads these and every older one.
WRITE_FORMATS = (1, 2)
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
