"""``[oidc]``: the IdP, this client's credentials, and what bff accepts from the IdP's tokens."""

from __future__ import annotations

from pathlib import Path

from bff.config.client_tls import read_client_cert
from bff.config.oidc_profile import read_authorization_options
from bff.config.reader import Reader, check_url, existing_file, origin_of, parse_duration, table
from bff.config.settings import OIDCSettings
from bff.config.values import ALLOWED_SIGNING_ALGS, AUTH_METHODS, TLS_AUTH_METHODS, AuthMethod, Secret
from bff.step_up import InvalidStepUp, parse_acr_values

#: Authorization-request parameters bff sets itself (OAuth 2.0, OIDC Core 3.1.2.1, RFC 7636): never overridable.
RESERVED_AUTH_PARAMS = (
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "redirect_uri",
    "client_id",
    "response_type",
    "scope",
)


def _check_credentials(r: Reader, method: AuthMethod, secret_value: str, key_file: str | None) -> None:
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
            r.problem("private_key_file", "file not found")


def _on_origin(r: Reader, name: str, url: str, public_origin: str) -> None:
    """Report ``url`` unless it is a valid URL on ``public_origin`` (a redirect target of this client)."""
    if check_url(r, name, url) and public_origin and origin_of(url) != public_origin:
        r.problem(name, "must be on public_origin")


def _redirect_uri(r: Reader, public_origin: str) -> str:
    redirect_uri = r.get("redirect_uri", str)
    if not redirect_uri and public_origin:
        return public_origin + "/bff/callback"
    if redirect_uri:
        _on_origin(r, "redirect_uri", redirect_uri, public_origin)
    return redirect_uri


def _acr_values_allowed(r: Reader) -> tuple[str, ...]:
    values = r.string_list("acr_values_allowed")
    for i, value in enumerate(values):
        try:
            parse_acr_values(value)
        except InvalidStepUp:
            r.problem(f"acr_values_allowed[{i}]", "must be one value of letters, digits and ':._~/-' (RFC 9470)")
            continue
        if " " in value:
            r.problem(f"acr_values_allowed[{i}]", "must be one value, not several separated by spaces")
    return values


def _signing_algs(r: Reader) -> tuple[str, ...]:
    algs = r.string_list("id_token_signing_algs")
    for i, alg in enumerate(algs):
        if alg not in ALLOWED_SIGNING_ALGS:
            r.problem(
                f"id_token_signing_algs[{i}]",
                f"is refused; allowed: {', '.join(ALLOWED_SIGNING_ALGS)} (never 'none' or HS*, RFC 8725 3.1)",
            )
    if not algs:
        r.problem("id_token_signing_algs", "must not be empty")
    return algs


def _trusted_audiences(r: Reader, client_id: str) -> tuple[str, ...]:
    audiences = r.string_list("trusted_audiences")
    for i, audience in enumerate(audiences):
        if not audience:
            r.problem(f"trusted_audiences[{i}]", "must not be empty")
        elif audience == client_id:
            r.problem(f"trusted_audiences[{i}]", "is client_id, which is always an accepted audience")
    return audiences


def _extra_auth_params(r: Reader) -> dict[str, str]:
    extra = r.string_map("extra_auth_params")
    for reserved in RESERVED_AUTH_PARAMS:
        if reserved in extra:
            r.problem(f"extra_auth_params.{reserved}", "is set by bff and may not be overridden")
    return extra


def read_oidc(root: Reader, public_origin: str) -> OIDCSettings:
    r = table(root, "oidc", OIDCSettings, required=True)
    issuer = r.get("issuer", str, "", required=True)
    if issuer:
        check_url(r, "issuer", issuer)
    client_id = r.get("client_id", str, "", required=True)
    secret_value = r.get("client_secret", str, "")
    method = r.choice("token_endpoint_auth_method", AUTH_METHODS)
    key_file = r.optional("private_key_file")
    _check_credentials(r, method, secret_value, key_file)
    scopes = r.string_list("scopes")
    if "openid" not in scopes:
        r.problem("scopes", "must include 'openid'")
    redirect_uri = _redirect_uri(r, public_origin)
    post_logout = r.optional("post_logout_redirect_uri")
    if post_logout:
        _on_origin(r, "post_logout_redirect_uri", post_logout, public_origin)
    algs = _signing_algs(r)
    trusted_audiences = _trusted_audiences(r, client_id)
    skew = r.converted("clock_skew", parse_duration)
    if skew > 300:
        r.problem("clock_skew", "must not exceed 5m")
    timeout = r.converted("timeout", parse_duration)
    if timeout <= 0:  # every IdP call, and every wait for a token refresh, would fail at once
        r.problem("timeout", "must be positive")
    extra = _extra_auth_params(r)
    ca_bundle = existing_file(r, "ca_bundle")
    tls = read_client_cert(r)
    if method in TLS_AUTH_METHODS and not tls.cert and not r.data.get("client_cert"):
        r.problem("client_cert", f"is required for {method} (RFC 8705 2: the client authenticates with it)")
    user_claims = r.string_list("user_claims")
    acr_values_allowed = _acr_values_allowed(r)
    dpop = r.get("dpop", bool)
    dpop_key_file = existing_file(r, "dpop_key_file")
    if dpop and not dpop_key_file:
        r.problem("dpop_key_file", "is required when dpop = true (a PEM EC P-256 private key; docs/dpop.md)")
    options = read_authorization_options(
        r, method=method, key_file=key_file, dpop=dpop, client_cert=tls.cert, algs=algs
    )
    r.finish()
    return OIDCSettings(
        issuer=issuer.rstrip("/") if issuer.endswith("/") and issuer.count("/") > 3 else issuer,
        client_id=client_id,
        client_secret=Secret(secret_value) if secret_value else None,
        token_endpoint_auth_method=method,
        private_key_file=key_file,
        scopes=scopes,
        redirect_uri=redirect_uri,
        post_logout_redirect_uri=post_logout,
        id_token_signing_algs=options.id_token_signing_algs,
        trusted_audiences=trusted_audiences,
        clock_skew=skew,
        timeout=timeout,
        extra_auth_params=extra,
        ca_bundle=ca_bundle,
        client_cert=tls.cert,
        client_key=tls.key,
        client_key_password=tls.password,
        user_claims=user_claims,
        acr_values_allowed=acr_values_allowed,
        dpop=dpop,
        dpop_key_file=dpop_key_file,
        par=options.par,
        request_object=options.request_object,
        profile=options.profile,
    )
