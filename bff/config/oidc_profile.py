"""``[oidc] par``, ``request_object`` and ``profile``: how bff sends its authorization requests, and the FAPI 2.0
Security Profile's demands on the rest of ``[oidc]``.

What can be checked without the IdP is checked here, one problem per key; what needs the IdP's metadata (is there
a PAR endpoint, S256, the ``iss`` parameter, the client authentication method) is checked when the metadata is
loaded (``bff.oidc.profiles``). docs/par-fapi2.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from bff.config.reader import Reader
from bff.config.values import (
    FAPI2_SIGNING_ALGS,
    OIDC_PROFILES,
    PAR_MODES,
    REQUEST_OBJECT_MODES,
    TLS_AUTH_METHODS,
    AuthMethod,
    OIDCProfile,
    ParMode,
    RequestObjectMode,
)

#: FAPI 2.0 Security Profile 5.3.2.1: the client authentication methods it allows.
FAPI2_AUTH_METHODS: tuple[AuthMethod, ...] = ("private_key_jwt", *TLS_AUTH_METHODS)


@dataclass(frozen=True)
class AuthorizationOptions:
    par: ParMode
    request_object: RequestObjectMode
    profile: OIDCProfile
    id_token_signing_algs: tuple[str, ...]


def read_authorization_options(
    r: Reader,
    *,
    method: AuthMethod,
    key_file: str | None,
    dpop: bool,
    client_cert: str | None,
    algs: tuple[str, ...],
) -> AuthorizationOptions:
    """The three keys, checked against each other and against the client's credentials."""
    par = r.choice("par", PAR_MODES)
    request_object = r.choice("request_object", REQUEST_OBJECT_MODES)
    profile = r.choice("profile", OIDC_PROFILES)
    if request_object == "always" and not key_file:
        r.problem("request_object", "'always' needs private_key_file: request objects are signed with it (RFC 9101)")
    if profile == "fapi2":
        par, algs = _check_fapi2(r, par=par, method=method, dpop=dpop, client_cert=client_cert, algs=algs)
    return AuthorizationOptions(par=par, request_object=request_object, profile=profile, id_token_signing_algs=algs)


def _check_fapi2(
    r: Reader, *, par: ParMode, method: AuthMethod, dpop: bool, client_cert: str | None, algs: tuple[str, ...]
) -> tuple[ParMode, tuple[str, ...]]:
    """FAPI 2.0 Security Profile 5.3.2 (authorization server) and 5.3.3 (client), as far as bff's settings go."""
    if par == "off":
        r.problem("par", "must not be 'off' with profile = 'fapi2' (FAPI 2.0 SP 5.3.3.2: pushed requests only)")
    if method not in FAPI2_AUTH_METHODS:
        r.problem(
            "token_endpoint_auth_method",
            f"{method} is refused by profile = 'fapi2'; use {', '.join(FAPI2_AUTH_METHODS)} (FAPI 2.0 SP 5.3.3.4)",
        )
    if not dpop and not client_cert:
        r.problem(
            "dpop",
            "profile = 'fapi2' needs sender-constrained tokens: dpop = true (RFC 9449) or a client_cert for"
            " certificate-bound tokens (RFC 8705) (FAPI 2.0 SP 5.3.3.3)",
        )
    if "id_token_signing_algs" not in r.data:
        algs = tuple(alg for alg in FAPI2_SIGNING_ALGS if alg != "EdDSA")  # PS256 and ES256, what IdPs sign with
    for i, alg in enumerate(algs):
        if alg not in FAPI2_SIGNING_ALGS:
            r.problem(
                f"id_token_signing_algs[{i}]",
                f"is refused by profile = 'fapi2'; allowed: {', '.join(FAPI2_SIGNING_ALGS)} (FAPI 2.0 SP 5.4.1)",
            )
    return "required", algs
