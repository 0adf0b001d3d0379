"""What the configuration asks of the IdP's metadata, checked once it is loaded: PAR (``[oidc] par``), signed
request objects (``[oidc] request_object``) and the FAPI 2.0 Security Profile (``[oidc] profile = "fapi2"``).

:func:`plan_authorization` decides how authorization requests are sent, or lists every reason the IdP cannot serve
this configuration, one line per missing capability; the caller refuses to start (``ConfigError``) with them. The
checks that need no IdP are ``bff.config.oidc_profile``'s. docs/par-fapi2.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from bff.config import OIDCSettings
from bff.config.values import FAPI2_SIGNING_ALGS, REQUEST_OBJECT_ALGS, TLS_AUTH_METHODS
from bff.errors import ConfigError
from bff.oidc.client_auth import ClientAuth
from bff.oidc.discovery import ProviderMetadata
from bff.oidc.dpop import ALG as DPOP_ALG
from bff.oidc.request_object import RequestObjectSigner, request_object_alg
from bff.types import Clock


@dataclass(frozen=True)
class AuthorizationPlan:
    """How this IdP gets authorization requests: pushed to ``par_endpoint`` (None: in the browser's URL), and
    signed with ``request_object_alg`` (None: plain parameters)."""

    par_endpoint: str | None
    request_object_alg: str | None


def plan_authorization(
    settings: OIDCSettings, metadata: ProviderMetadata, auth: ClientAuth, *, key: str = "oidc"
) -> AuthorizationPlan:
    """The plan, or ``ConfigError`` listing every capability the IdP lacks for this configuration, each line
    prefixed with ``key``, the config table these settings came from (``frontends['shop'].oidc``)."""
    problems = authorization_problems(settings, metadata, auth)
    if problems:
        raise ConfigError([f"{key}: {problem}" for problem in problems])
    return AuthorizationPlan(
        par_endpoint=_par_endpoint(settings, metadata, []),
        request_object_alg=_request_object_alg(settings, metadata, auth, []),
    )


def request_object_signer(
    settings: OIDCSettings, metadata: ProviderMetadata, auth: ClientAuth, clock: Clock
) -> RequestObjectSigner | None:
    """What signs this client's request objects when ``[oidc] request_object`` and the IdP call for them (RFC
    9101), with the plan's algorithm; None for plain parameters, or when the key cannot sign one (a problem
    :func:`authorization_problems` names)."""
    alg = _request_object_alg(settings, metadata, auth, [])
    if alg is None or auth.signing_key is None:
        return None
    key = auth.signing_key[0]
    return RequestObjectSigner(key, alg, client_id=settings.client_id, audience=metadata.issuer, clock=clock)


def authorization_problems(settings: OIDCSettings, metadata: ProviderMetadata, auth: ClientAuth) -> list[str]:
    """Every capability the IdP lacks for this configuration, once each (``bff doctor`` shows them too)."""
    problems = request_problems(settings, metadata, auth)
    if settings.profile == "fapi2":
        problems.extend(fapi2_problems(settings, metadata, auth))
    return list(dict.fromkeys(problems))


def request_problems(settings: OIDCSettings, metadata: ProviderMetadata, auth: ClientAuth) -> list[str]:
    """What ``[oidc] par`` and ``request_object`` lack at the IdP."""
    problems: list[str] = []
    _par_endpoint(settings, metadata, problems)
    _request_object_alg(settings, metadata, auth, problems)
    return problems


def _par_endpoint(settings: OIDCSettings, metadata: ProviderMetadata, problems: list[str]) -> str | None:
    endpoint = metadata.pushed_authorization_request_endpoint
    if settings.client_cert:  # RFC 8705 5: the mTLS alias when bff presents a certificate
        endpoint = metadata.mtls_endpoint_aliases.get("pushed_authorization_request_endpoint", endpoint)
    if settings.par == "off":
        if metadata.require_pushed_authorization_requests:
            problems.append(
                "par = 'off', but the IdP's metadata says require_pushed_authorization_requests (RFC 9126 5)"
            )
        return None
    if endpoint is None and (settings.par == "required" or metadata.require_pushed_authorization_requests):
        problems.append(
            "the IdP's metadata has no pushed_authorization_request_endpoint (PAR, RFC 9126), which"
            f" {_why_par(settings)} requires"
        )
    return endpoint


def _why_par(settings: OIDCSettings) -> str:
    return "profile = 'fapi2'" if settings.profile == "fapi2" else "par = 'required'"


def _request_object_alg(
    settings: OIDCSettings, metadata: ProviderMetadata, auth: ClientAuth, problems: list[str]
) -> str | None:
    mode = settings.request_object
    if mode == "off":
        if metadata.require_signed_request_object:
            problems.append("request_object = 'off', but the IdP's metadata says require_signed_request_object")
        return None
    if mode == "auto" and not metadata.require_signed_request_object:
        return None
    if auth.signing_key is None:
        problems.append(
            "the IdP requires signed request objects (RFC 9101): set private_key_file, the key they are signed with"
        )
        return None
    key, _ = auth.signing_key
    # FAPI 2.0 SP 5.4.1: PS256, ES256 or EdDSA (bff signs with the first two).
    allowed = FAPI2_SIGNING_ALGS if settings.profile == "fapi2" else REQUEST_OBJECT_ALGS
    alg = request_object_alg(key, metadata.request_object_signing_alg_values_supported, allowed=allowed)
    if alg is None:
        supported = ", ".join(metadata.request_object_signing_alg_values_supported) or "none listed"
        problems.append(
            f"no request object signing algorithm fits private_key_file's key and the IdP's"
            f" request_object_signing_alg_values_supported ({supported[:200]})"
        )
    return alg


def fapi2_problems(settings: OIDCSettings, metadata: ProviderMetadata, auth: ClientAuth) -> list[str]:
    """FAPI 2.0 Security Profile 5.3.2 as far as metadata shows it: one line per missing capability."""
    problems: list[str] = []
    if metadata.response_types_supported and "code" not in metadata.response_types_supported:
        problems.append("the IdP's metadata does not list code in response_types_supported (FAPI 2.0 SP 5.3.2.1)")
    if metadata.pushed_authorization_request_endpoint is None:
        problems.append(
            "the IdP's metadata has no pushed_authorization_request_endpoint (PAR, RFC 9126), which profile ="
            " 'fapi2' requires"
        )
    if "S256" not in metadata.code_challenge_methods_supported:
        problems.append(
            "the IdP's metadata does not list S256 in code_challenge_methods_supported (PKCE, FAPI 2.0 SP 5.3.2.2)"
        )
    if not metadata.authorization_response_iss_parameter_supported:
        problems.append(
            "the IdP's metadata lacks authorization_response_iss_parameter_supported: true (RFC 9207, FAPI 2.0 SP"
            " 5.3.2.2)"
        )
    method = settings.token_endpoint_auth_method
    if method not in metadata.token_endpoint_auth_methods_supported:
        problems.append(f"the IdP's metadata does not list {method} in token_endpoint_auth_methods_supported")
    if method == "private_key_jwt" and auth.signing_key is not None:
        problems.extend(_assertion_alg_problems(auth.signing_key[1], metadata))
    if settings.dpop:
        if metadata.dpop_signing_alg_values_supported and DPOP_ALG not in metadata.dpop_signing_alg_values_supported:
            problems.append(f"the IdP's metadata does not list {DPOP_ALG} in dpop_signing_alg_values_supported")
    elif not metadata.tls_client_certificate_bound_access_tokens:
        problems.append(
            "the IdP's metadata lacks tls_client_certificate_bound_access_tokens: true (RFC 8705 3.3), and dpop is"
            " off: its tokens would not be sender-constrained"
        )
    offered = metadata.id_token_signing_alg_values_supported
    if offered and not set(offered) & set(settings.id_token_signing_algs):
        problems.append(
            f"the IdP signs ID tokens with none of {', '.join(settings.id_token_signing_algs)}"
            " (id_token_signing_alg_values_supported)"
        )
    if method in TLS_AUTH_METHODS and not settings.client_cert:  # pragma: no cover - refused by the config check
        problems.append(f"{method} needs client_cert")
    return problems


def _assertion_alg_problems(alg: str, metadata: ProviderMetadata) -> list[str]:
    """FAPI 2.0 SP 5.4.1: the client assertion is signed with PS256, ES256 or EdDSA, which the IdP must list."""
    if alg not in FAPI2_SIGNING_ALGS:
        return [
            f"private_key_file's key signs client assertions with {alg}; profile = 'fapi2' allows only"
            f" {', '.join(FAPI2_SIGNING_ALGS)} (FAPI 2.0 SP 5.4.1): use an RSA or EC P-256 key"
        ]
    offered = metadata.token_endpoint_auth_signing_alg_values_supported
    if alg not in offered:
        shown = ", ".join(offered)[:200] or "none listed"
        return [
            f"the IdP's metadata does not list {alg} (the client assertion's algorithm) in"
            f" token_endpoint_auth_signing_alg_values_supported ({shown}), which profile = 'fapi2' requires"
            " (FAPI 2.0 SP 5.4.1)"
        ]
    return []
