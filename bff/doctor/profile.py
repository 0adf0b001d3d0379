"""``idp.par`` and ``idp.fapi2``: what ``[oidc] par``, ``request_object`` and ``profile`` ask of the IdP's
discovery document, judged by the very checks ``bff serve`` refuses to start with (``bff.oidc.profiles``), so
doctor and start agree. docs/par-fapi2.md.
"""

from __future__ import annotations

import httpx

from bff.config import Config
from bff.doctor.credentials import Unusable, client_auth
from bff.doctor.report import Check, failed, passed, skipped
from bff.oidc.discovery import ProviderMetadata
from bff.oidc.profiles import fapi2_problems, request_problems
from bff.types import Clock, JSONObject, system_clock

IDS = ("idp.par", "idp.fapi2")


def check_profile(
    config: Config, http: httpx.AsyncClient, document: JSONObject | None, clock: Clock = system_clock
) -> list[Check]:
    if document is None:
        return [skipped(i, "the IdP's discovery document is not usable (see idp.*)") for i in IDS]
    settings = config.oidc
    found = client_auth(config, http, document, clock)
    if isinstance(found, Unusable):
        return [failed(i, found.message, found.fix) for i in IDS]
    metadata, auth = found
    request = request_problems(settings, metadata, auth)
    checks = [_par(settings.par, settings.request_object, metadata, request)]
    if settings.profile != "fapi2":
        checks.append(skipped("idp.fapi2", "[oidc] profile is not 'fapi2'"))
        return checks
    missing = [problem for problem in fapi2_problems(settings, metadata, auth) if problem not in request]
    if missing:
        checks.append(
            failed(
                "idp.fapi2",
                "the IdP cannot serve profile = 'fapi2'; bff refuses to start: " + "; ".join(missing),
                "enable each capability named at the IdP (FAPI 2.0 Security Profile), or set [oidc] profile ="
                " 'none' knowingly",
            )
        )
    else:
        checks.append(passed("idp.fapi2", "the IdP's metadata shows every capability FAPI 2.0 asks of it"))
    return checks


def _par(par: str, request_object: str, metadata: ProviderMetadata, problems: list[str]) -> Check:
    if problems:
        return failed(
            "idp.par",
            "bff refuses to start: " + "; ".join(problems),
            f"enable what is named at the IdP, or change [oidc] par ({par!r}) / request_object ({request_object!r})",
        )
    endpoint = metadata.pushed_authorization_request_endpoint
    if par == "off" or endpoint is None:
        return passed("idp.par", "authorization requests travel in the browser's URL (no PAR)")
    return passed("idp.par", f"authorization requests are pushed to {endpoint[:200]} (RFC 9126)")
