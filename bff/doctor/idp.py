"""The IdP's discovery document, read as bff will use it (OpenID Connect Discovery 1.0, RFC 8414), and its clock.

Each capability bff relies on is one check: the issuer (Discovery 4.3), PKCE S256 (RFC 7636 4.2), the ``iss``
authorization response parameter (RFC 9207), revocation (RFC 7009), end-session (RP-Initiated Logout 1.0),
back-channel logout (Back-Channel Logout 1.0), the ID token signing algorithms, the JWKS, and the skew of the
IdP's clock (its ``Date`` header, RFC 9110 6.6.1) against ``[oidc] clock_skew``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from bff.config import Config
from bff.doctor.probe import Answer, NoAnswer, call
from bff.doctor.report import Check, failed, passed, skipped, warned
from bff.oidc.discovery import discovery_url
from bff.types import Clock, JSONObject

IDS = (
    "idp.discovery.fetch",
    "idp.discovery.issuer",
    "idp.pkce.s256",
    "idp.iss_parameter",
    "idp.revocation",
    "idp.end_session",
    "idp.backchannel_logout",
    "idp.signing_algs",
    "idp.jwks",
    "idp.clock_skew",
)

MTLS_FIX = ", and that the IdP trusts the CA of [oidc] client_cert (it drops connections with a certificate it refuses)"


@dataclass(frozen=True)
class IdPFindings:
    checks: list[Check]
    #: The discovery document when it could be read and its issuer matches (the client checks need it).
    metadata: JSONObject | None


async def check_idp(config: Config, http: httpx.AsyncClient, clock: Clock) -> IdPFindings:
    url = discovery_url(config.oidc.issuer)
    answer = await call(http, "GET", url, headers={"Accept": "application/json"})
    document = _document(answer, certificate=bool(config.oidc.client_cert))
    if isinstance(document, Check):
        return IdPFindings([document, *(skipped(i, "the discovery document could not be read") for i in IDS[1:])], None)
    checks = [passed("idp.discovery.fetch", f"{url} answered a JSON document")]
    issuer = document.get("issuer")
    if issuer != config.oidc.issuer:
        shown = json.dumps(issuer)[:200]
        checks.append(
            failed(
                "idp.discovery.issuer",
                f"the IdP says its issuer is {shown}, the config says {config.oidc.issuer!r}: bff refuses the"
                " document (Discovery 4.3)",
                f"set [oidc] issuer = {shown} (exactly, trailing slash included)"
                if isinstance(issuer, str)
                else "point [oidc] issuer at the IdP's issuer URL",
            )
        )
        return IdPFindings(checks + [skipped(i, "the issuer does not match") for i in IDS[2:]], None)
    checks.append(passed("idp.discovery.issuer", f"issuer {issuer!r} matches [oidc] issuer"))
    checks += [
        _pkce(document),
        _flag(
            document,
            "idp.iss_parameter",
            "authorization_response_iss_parameter_supported",
            "the IdP sends iss in authorization responses (RFC 9207 mix-up defence)",
            "the IdP does not advertise the RFC 9207 iss parameter: mix-up attacks between IdPs are not detected",
            "enable the iss authorization response parameter at the IdP (RFC 9207), if it offers it",
        ),
        _endpoint(
            document,
            "idp.revocation",
            "revocation_endpoint",
            "logout cannot revoke the refresh token at the IdP (RFC 7009); it stays valid until it expires",
            "enable token revocation at the IdP, or keep refresh tokens short-lived",
        ),
        _endpoint(
            document,
            "idp.end_session",
            "end_session_endpoint",
            "logout ends bff's session but not the IdP's: the next login may not ask for credentials",
            "enable RP-Initiated Logout (end_session_endpoint) at the IdP",
        ),
        _flag(
            document,
            "idp.backchannel_logout",
            "backchannel_logout_supported",
            "back-channel logout supported: a logout at the IdP ends bff's sessions",
            "the IdP does not advertise back-channel logout: a logout at the IdP leaves bff's sessions alive"
            " until they refresh",
            "enable back-channel logout and register {public_origin}/bff/backchannel-logout at the IdP".replace(
                "{public_origin}", config.server.public_origin
            ),
        ),
        _signing_algs(document, config.oidc.id_token_signing_algs),
        await _jwks(document, http),
        _clock_skew(answer, config.oidc.clock_skew, clock) if isinstance(answer, Answer) else skipped(IDS[-1], ""),
    ]
    return IdPFindings(checks, document)


def _document(answer: Answer | NoAnswer, *, certificate: bool) -> JSONObject | Check:
    fix = "check [oidc] issuer, the network path to the IdP and [oidc] ca_bundle"
    if isinstance(answer, NoAnswer):
        # bff presents [oidc] client_cert on every IdP connection (RFC 8705 2); under TLS 1.3 an IdP that refuses
        # it closes the connection after the handshake, which looks like any other dropped connection.
        mtls = certificate and answer.url.startswith("https://")
        return failed("idp.discovery.fetch", answer.reason, fix + (MTLS_FIX if mtls else ""))
    if answer.status != 200:
        return failed("idp.discovery.fetch", f"{answer.url} answered HTTP {answer.status}", fix)
    try:
        data: Any = json.loads(answer.body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return failed("idp.discovery.fetch", f"{answer.url} did not answer a JSON object", fix)
    return data


def _strings(document: JSONObject, name: str) -> list[str] | None:
    value = document.get(name)
    if not isinstance(value, list):
        return None
    return [item for item in value if isinstance(item, str)]


def _pkce(document: JSONObject) -> Check:
    methods = _strings(document, "code_challenge_methods_supported")
    if methods is None:
        return warned(
            "idp.pkce.s256",
            "the IdP does not advertise code_challenge_methods_supported: PKCE may be ignored (RFC 8414 2)",
            "enable PKCE with S256 at the IdP and make it advertise code_challenge_methods_supported",
        )
    if "S256" not in methods:
        return failed(
            "idp.pkce.s256",
            f"the IdP supports PKCE methods {methods[:5]}, not S256: bff always sends S256 (RFC 7636 4.2)",
            "enable the S256 code challenge method at the IdP (never plain)",
        )
    return passed("idp.pkce.s256", "PKCE with S256 supported")


def _flag(document: JSONObject, check_id: str, name: str, ok: str, missing: str, fix: str) -> Check:
    if document.get(name) is True:
        return passed(check_id, ok)
    return warned(check_id, missing, fix)


def _endpoint(document: JSONObject, check_id: str, name: str, missing: str, fix: str) -> Check:
    value = document.get(name)
    if isinstance(value, str) and value:
        return passed(check_id, f"{name}: {value[:200]}")
    return warned(check_id, f"no {name}: {missing}", fix)


def _signing_algs(document: JSONObject, configured: Sequence[str]) -> Check:
    offered = _strings(document, "id_token_signing_alg_values_supported")
    if not offered:
        return warned(
            "idp.signing_algs",
            "the IdP does not list id_token_signing_alg_values_supported (required by Discovery 3)",
            f"check that the IdP signs ID tokens with one of [oidc] id_token_signing_algs {list(configured)}",
        )
    common = [alg for alg in configured if alg in offered]
    if not common:
        return failed(
            "idp.signing_algs",
            f"the IdP signs ID tokens with {offered[:8]}, bff accepts only {list(configured)}: every login fails",
            f"set [oidc] id_token_signing_algs to the IdP's asymmetric algorithm(s), e.g. {offered[:1]}",
        )
    return passed("idp.signing_algs", f"ID token algorithms in common: {common}")


async def _jwks(document: JSONObject, http: httpx.AsyncClient) -> Check:
    uri = document.get("jwks_uri")
    if not isinstance(uri, str) or not uri:
        return failed("idp.jwks", "the discovery document has no jwks_uri", "fix the IdP's discovery document")
    answer = await call(http, "GET", uri, headers={"Accept": "application/json"})
    if isinstance(answer, NoAnswer):
        return failed("idp.jwks", answer.reason, "make jwks_uri reachable from bff")
    try:
        keys: Any = json.loads(answer.body).get("keys") if answer.status == 200 else None
    except (ValueError, AttributeError):
        keys = None
    if not isinstance(keys, list) or not keys:
        return failed(
            "idp.jwks",
            f"{uri} answered HTTP {answer.status} without a key set: no ID token can be verified",
            "fix the IdP's jwks_uri",
        )
    return passed("idp.jwks", f"{len(keys)} key(s) at {uri}")


def _clock_skew(answer: Answer, allowed: float, clock: Clock) -> Check:
    header = answer.headers.get("date")
    try:
        when = parsedate_to_datetime(header).timestamp() if header else None
    except (TypeError, ValueError):
        when = None
    if when is None:
        return warned(
            "idp.clock_skew",
            "the IdP's answer has no valid Date header: its clock cannot be compared",
            "compare the IdP's clock with this host's by other means (both on NTP)",
        )
    skew = when - clock()
    # The Date header has whole seconds: up to 1 s of the difference is its rounding.
    size = max(0.0, abs(skew) - 1.0)
    said = f"the IdP's clock is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} this host's"
    fix = "synchronise both clocks with NTP (or raise [oidc] clock_skew if the drift is known and bounded)"
    if size > allowed:
        return failed(
            "idp.clock_skew", f"{said}, more than [oidc] clock_skew ({allowed:.0f} s): ID tokens are refused", fix
        )
    if size > allowed / 2:
        return warned("idp.clock_skew", f"{said}, over half of [oidc] clock_skew ({allowed:.0f} s)", fix)
    return passed("idp.clock_skew", f"clocks agree within {max(1.0, abs(skew)):.0f} s")
