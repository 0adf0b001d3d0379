"""The client registration, probed without logging anybody in.

* ``client.redirect_uri``: an authorization request with the configured ``client_id`` and ``redirect_uri`` (GET, no
  redirect followed). An IdP that knows both shows or redirects to its login page; one that does not answers an
  error page itself, since it must not redirect to an unregistered URI (RFC 6749 4.1.2.1).
* ``client.credentials``: a token request with the client's credentials and a code that cannot exist. RFC 6749 5.2:
  ``invalid_client`` means the credentials were refused, ``invalid_grant`` that they were accepted and only the
  code was not. Every ``token_endpoint_auth_method`` is probed, with bff's own client authentication
  (``bff.doctor.credentials``): a secret, a ``private_key_jwt`` assertion, or the TLS client certificate.
* ``client.par``: when the IdP has a pushed authorization request endpoint (RFC 9126), a dry PAR checks both at
  once: 201 means the client, its credentials and its redirect URI are all accepted.
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx

from bff.config import Config
from bff.config.values import TLS_AUTH_METHODS
from bff.doctor.credentials import Credentials, IdPCertificate, Unusable, credentials, credentials_fix
from bff.doctor.probe import Answer, NoAnswer, call
from bff.doctor.report import Check, failed, passed, skipped, warned
from bff.types import Clock, JSONObject, system_clock

IDS = ("client.redirect_uri", "client.credentials", "client.par")
#: The code of the dry token request: no IdP ever issued it.
PROBE_CODE = "bff-doctor-probe"


async def check_client(
    config: Config,
    http: httpx.AsyncClient,
    metadata: JSONObject | None,
    *,
    certificate: IdPCertificate | None = None,
    clock: Clock = system_clock,
) -> list[Check]:
    """``http`` is the IdP client, presenting ``certificate`` (``[oidc] client_cert``) when it is usable."""
    if metadata is None:
        return [skipped(i, "the IdP's discovery document is not usable (see idp.*)") for i in IDS]
    params = _authorization_params(config)
    auth = credentials(config, http, metadata, certificate or IdPCertificate(), clock)
    checks: list[Check] = []
    if metadata.get("require_pushed_authorization_requests") is True:
        checks.append(
            skipped("client.redirect_uri", "the IdP takes authorization requests by PAR only: see client.par")
        )
    else:
        endpoint = _string(metadata, "authorization_endpoint")
        sent = params if isinstance(auth, Unusable) else auth.authorization(params, pushed=False)
        checks.append(await _redirect_uri(config, http, endpoint, sent))
    if isinstance(auth, Unusable):
        checks.append(failed("client.credentials", f"bff cannot authenticate as the client: {auth.message}", auth.fix))
    else:
        checks.append(await _credentials(config, http, auth))
    par = _string(metadata, "pushed_authorization_request_endpoint")
    if not par:
        checks.append(skipped("client.par", "the IdP has no pushed_authorization_request_endpoint (RFC 9126)"))
    elif isinstance(auth, Unusable):
        checks.append(skipped("client.par", "bff cannot authenticate as the client (see client.credentials)"))
    else:
        endpoint = auth.endpoint("pushed_authorization_request_endpoint", par)
        checks.append(await _par(config, http, endpoint, auth.authorization(params, pushed=True), auth))
    return checks


def _string(metadata: JSONObject, name: str) -> str:
    value = metadata.get(name)
    return value if isinstance(value, str) else ""


def _authorization_params(config: Config) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": config.oidc.client_id,
        "redirect_uri": config.oidc.redirect_uri,
        "scope": " ".join(config.oidc.scopes),
        "state": secrets.token_urlsafe(16),
        "nonce": secrets.token_urlsafe(16),
        # Any valid S256 challenge will do: the code it would protect is never exchanged.
        "code_challenge": base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode(),
        "code_challenge_method": "S256",
    }


def _oauth_error(answer: Answer) -> tuple[str, str]:
    """RFC 6749 5.2 ``error`` and ``error_description`` of a JSON answer (empty when there is none)."""
    try:
        data: Any = json.loads(answer.body)
    except ValueError:
        return "", ""
    if not isinstance(data, dict):
        return "", ""
    error, description = data.get("error"), data.get("error_description")
    return (
        error[:60] if isinstance(error, str) else "",
        description[:200] if isinstance(description, str) else "",
    )


def _registration_fix(config: Config) -> str:
    return (
        f"register {config.oidc.redirect_uri} as a redirect URI of client {config.oidc.client_id!r} at the IdP"
        " (or set [oidc] redirect_uri to the registered one)"
    )


async def _redirect_uri(config: Config, http: httpx.AsyncClient, endpoint: str, params: dict[str, str]) -> Check:
    url = f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(params)}"
    answer = await call(http, "GET", url, shown=endpoint)  # the query may carry a signed request object
    if isinstance(answer, NoAnswer):
        return failed("client.redirect_uri", answer.reason, "make the authorization endpoint reachable")
    location = answer.headers.get("location", "")
    if 300 <= answer.status < 400 and location:
        back = urlsplit(location)
        mine = urlsplit(config.oidc.redirect_uri)
        if (back.scheme, back.netloc, back.path) == (mine.scheme, mine.netloc, mine.path):
            error = dict(parse_qsl(back.query)).get("error", "")[:60]
            if error:
                return failed(
                    "client.redirect_uri",
                    f"the IdP accepted the redirect URI but refused the request: error={error}",
                    "allow the authorization code flow and [oidc] scopes for this client at the IdP",
                )
        return passed("client.redirect_uri", f"client and redirect URI accepted (HTTP {answer.status} to login)")
    if answer.status == 200:
        return passed("client.redirect_uri", "client and redirect URI accepted (the IdP shows its login page)")
    error, description = _oauth_error(answer)
    said = f" ({error}: {description})" if error else ""
    return failed(
        "client.redirect_uri",
        f"the IdP refused an authorization request for client {config.oidc.client_id!r} with redirect URI"
        f" {config.oidc.redirect_uri} (HTTP {answer.status}){said}",
        _registration_fix(config),
    )


def _unreachable_fix(config: Config, what: str) -> str:
    if config.oidc.token_endpoint_auth_method in TLS_AUTH_METHODS:
        return f"make the {what} reachable, with a TLS server that trusts the CA of [oidc] client_cert (RFC 8705 2)"
    return f"make the {what} reachable"


async def _credentials(config: Config, http: httpx.AsyncClient, auth: Credentials) -> Check:
    endpoint = auth.endpoint("token_endpoint", auth.metadata.token_endpoint)
    method = config.oidc.token_endpoint_auth_method
    fields = {
        "grant_type": "authorization_code",
        "code": PROBE_CODE,
        "redirect_uri": config.oidc.redirect_uri,
        "code_verifier": "bff-doctor-probe-" + "v" * 40,
    }
    answer = await auth.post(http, endpoint, fields)
    if isinstance(answer, NoAnswer):
        return failed("client.credentials", answer.reason, _unreachable_fix(config, "token endpoint"))
    error, description = _oauth_error(answer)
    if error == "invalid_grant":
        return passed(
            "client.credentials", f"client credentials ({method}) accepted (the probe's code was refused, as it must)"
        )
    if error in ("invalid_client", "unauthorized_client") or (answer.status == 401 and not error):
        return failed(
            "client.credentials",
            f"the token endpoint refused the client's credentials ({method}; HTTP {answer.status}"
            f" {error or 'no error code'})",
            credentials_fix(config, auth.certificate, auth.auth),
        )
    said = f"{error}: {description}" if error else "no OAuth error code"
    return warned(
        "client.credentials",
        f"the dry token request got HTTP {answer.status} ({said}): the credentials could not be confirmed",
        "log in once through bff to confirm the client's credentials",
    )


async def _par(
    config: Config,
    http: httpx.AsyncClient,
    endpoint: str,
    params: dict[str, str],
    auth: Credentials,
) -> Check:
    answer = await auth.post(http, endpoint, params)
    if isinstance(answer, NoAnswer):
        return failed("client.par", answer.reason, _unreachable_fix(config, "pushed authorization request endpoint"))
    if answer.status == 201:
        return passed("client.par", "pushed authorization request accepted: client, credentials and redirect URI")
    error, description = _oauth_error(answer)
    if error == "invalid_client" or answer.status == 401:
        return failed(
            "client.par",
            f"the PAR endpoint refused the client's credentials (HTTP {answer.status} {error})",
            credentials_fix(config, auth.certificate, auth.auth),
        )
    return failed(
        "client.par",
        f"the PAR endpoint refused the request (HTTP {answer.status} {error}: {description})",
        _registration_fix(config),
    )
