"""OpenID Provider metadata: fetched once from ``{issuer}/.well-known/openid-configuration`` and checked.

OpenID Connect Discovery 1.0 section 4. The answer's ``issuer`` must be exactly the configured issuer (section
4.3: "If these values are not identical, the data contained in the response MUST NOT be used"), and every endpoint
bff calls or sends the browser to must be ``https`` (``http`` only to a loopback host, for a local IdP).

Transport failures, error statuses and garbage are :class:`~bff.errors.IdPUnavailable` (retry later); a document
that answers but cannot be used is :class:`~bff.errors.InvalidProviderMetadata` (a misconfiguration).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from bff.errors import InvalidProviderMetadata
from bff.oidc._http import get_json_object, is_secure_url
from bff.types import JSONObject

WELL_KNOWN_PATH = "/.well-known/openid-configuration"


@dataclass(frozen=True)
class ProviderMetadata:
    """The parts of the discovery document bff uses. Defaults are the ones Discovery 1.0 section 3 states."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None = None
    #: RP-Initiated Logout 1.0 section 2.1.
    end_session_endpoint: str | None = None
    #: RFC 8414 section 2 / RFC 7009.
    revocation_endpoint: str | None = None
    #: Back-Channel Logout 1.0 section 2.1.
    backchannel_logout_supported: bool = False
    backchannel_logout_session_supported: bool = False
    #: RFC 8414 section 2; empty means the IdP did not say (PKCE may still work).
    code_challenge_methods_supported: tuple[str, ...] = ()
    id_token_signing_alg_values_supported: tuple[str, ...] = ()
    #: RFC 9207 section 3: when true, the authorization response must carry ``iss``.
    authorization_response_iss_parameter_supported: bool = False
    token_endpoint_auth_methods_supported: tuple[str, ...] = ("client_secret_basic",)
    grant_types_supported: tuple[str, ...] = ("authorization_code", "implicit")
    #: Discovery 3 (required there); empty means the IdP did not say.
    response_types_supported: tuple[str, ...] = ()
    #: RFC 8414 2: the algorithms a private_key_jwt client assertion may be signed with.
    token_endpoint_auth_signing_alg_values_supported: tuple[str, ...] = ()
    scopes_supported: tuple[str, ...] = ()
    #: RFC 8705 5: endpoints a client that presents a TLS client certificate uses instead of the plain ones.
    mtls_endpoint_aliases: Mapping[str, str] = field(default_factory=dict)
    #: RFC 9126 5: pushed authorization requests, and whether the IdP accepts only those.
    pushed_authorization_request_endpoint: str | None = None
    require_pushed_authorization_requests: bool = False
    #: RFC 9101 10.5 / RFC 8414 2: signed request objects, and whether the IdP accepts only those.
    require_signed_request_object: bool = False
    request_object_signing_alg_values_supported: tuple[str, ...] = ()
    #: RFC 8705 3.3 / RFC 9449 5.1: sender-constrained tokens the IdP issues.
    tls_client_certificate_bound_access_tokens: bool = False
    dpop_signing_alg_values_supported: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: JSONObject, *, issuer: str) -> ProviderMetadata:
        """Check a discovery document against the configured ``issuer``; raise InvalidProviderMetadata."""
        problems: list[str] = []
        if data.get("issuer") != issuer:
            # Discovery 4.3; the IdP's value is shown so the operator can fix the configured one.
            got = data.get("issuer")
            shown = repr(got[:200]) if isinstance(got, str) else type(got).__name__
            raise InvalidProviderMetadata(
                f"OpenID Provider metadata: issuer mismatch: expected {issuer!r}, got {shown}"
            )

        def url(name: str, *, required: bool) -> str | None:
            value = data.get(name)
            if value is None and not required:
                return None
            if not isinstance(value, str) or not value:
                problems.append(f"{name} is missing" if value is None else f"{name} is not a string")
                return None
            if not is_secure_url(value):
                problems.append(f"{name} must be an https URL (http only for a loopback host), got {value[:200]!r}")
                return None
            return value

        endpoints = {
            name: url(name, required=True) for name in ("authorization_endpoint", "token_endpoint", "jwks_uri")
        }
        optional = {
            name: url(name, required=False)
            for name in (
                "userinfo_endpoint",
                "end_session_endpoint",
                "revocation_endpoint",
                "pushed_authorization_request_endpoint",
            )
        }
        if not is_secure_url(issuer):
            problems.append(f"issuer must be an https URL (http only for a loopback host), got {issuer!r}")
        if problems:
            raise InvalidProviderMetadata("OpenID Provider metadata is unusable: " + "; ".join(problems))
        return cls(
            issuer=issuer,
            authorization_endpoint=str(endpoints["authorization_endpoint"]),
            token_endpoint=str(endpoints["token_endpoint"]),
            jwks_uri=str(endpoints["jwks_uri"]),
            userinfo_endpoint=optional["userinfo_endpoint"],
            end_session_endpoint=optional["end_session_endpoint"],
            revocation_endpoint=optional["revocation_endpoint"],
            backchannel_logout_supported=_flag(data, "backchannel_logout_supported"),
            backchannel_logout_session_supported=_flag(data, "backchannel_logout_session_supported"),
            code_challenge_methods_supported=_strings(data, "code_challenge_methods_supported", ()),
            id_token_signing_alg_values_supported=_strings(data, "id_token_signing_alg_values_supported", ()),
            authorization_response_iss_parameter_supported=_flag(
                data, "authorization_response_iss_parameter_supported"
            ),
            token_endpoint_auth_methods_supported=_strings(
                data, "token_endpoint_auth_methods_supported", cls.token_endpoint_auth_methods_supported
            ),
            grant_types_supported=_strings(data, "grant_types_supported", cls.grant_types_supported),
            response_types_supported=_strings(data, "response_types_supported", ()),
            token_endpoint_auth_signing_alg_values_supported=_strings(
                data, "token_endpoint_auth_signing_alg_values_supported", ()
            ),
            scopes_supported=_strings(data, "scopes_supported", ()),
            mtls_endpoint_aliases=_aliases(data),
            pushed_authorization_request_endpoint=optional["pushed_authorization_request_endpoint"],
            require_pushed_authorization_requests=_flag(data, "require_pushed_authorization_requests"),
            require_signed_request_object=_flag(data, "require_signed_request_object"),
            request_object_signing_alg_values_supported=_strings(
                data, "request_object_signing_alg_values_supported", ()
            ),
            tls_client_certificate_bound_access_tokens=_flag(data, "tls_client_certificate_bound_access_tokens"),
            dpop_signing_alg_values_supported=_strings(data, "dpop_signing_alg_values_supported", ()),
        )


#: The aliases bff uses (RFC 8705 5); any other name in ``mtls_endpoint_aliases`` is ignored.
_ALIASED = ("token_endpoint", "revocation_endpoint", "pushed_authorization_request_endpoint")


def _aliases(data: JSONObject) -> dict[str, str]:
    """RFC 8705 5: a JSON object of endpoint names to https URLs; an entry that is not one is ignored (the plain
    endpoint is then used): a client certificate is only ever presented over TLS."""
    value: Any = data.get("mtls_endpoint_aliases")
    if not isinstance(value, dict):
        return {}
    return {
        name: url
        for name in _ALIASED
        if isinstance(url := value.get(name), str) and url.startswith("https://") and is_secure_url(url)
    }


def _flag(data: JSONObject, name: str) -> bool:
    # Anything but a JSON true is "not supported": a string "true" is a broken IdP, not a promise.
    return data.get(name) is True


def _strings(data: JSONObject, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value: Any = data.get(name)
    if not isinstance(value, list):
        return default
    return tuple(item for item in value if isinstance(item, str))


def discovery_url(issuer: str) -> str:
    # Discovery 4: "any terminating / MUST be removed before appending /.well-known/openid-configuration".
    return issuer.rstrip("/") + WELL_KNOWN_PATH


async def fetch_metadata(client: httpx.AsyncClient, issuer: str) -> ProviderMetadata:
    """Fetch and check the discovery document of ``issuer``.

    Raises :class:`~bff.errors.IdPUnavailable` when the IdP cannot be reached or answers garbage, and its subclass
    :class:`~bff.errors.InvalidProviderMetadata` when the document answers but must not be used.
    """
    data = await get_json_object(client, discovery_url(issuer), what="OpenID Provider metadata", route="idp:discovery")
    return ProviderMetadata.from_json(data, issuer=issuer)
