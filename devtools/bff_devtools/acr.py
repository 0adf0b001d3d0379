"""The authentication context classes (OpenID Connect Core 2 ``acr``; RFC 9470 step-up) of the reference IdP, which
the demo API asks for.

Two levels: ``urn:bff:acr:pwd`` (a password; every login) and ``urn:bff:acr:mfa`` (a password and a second factor).
A client that lists ``urn:bff:acr:mfa`` in ``acr_values`` gets the login form with the second factor unless the
IdP session already has it. The second factor is a fixed demo code (shown on the form in demo mode): this IdP is
for development, and the point is the protocol, not the factor.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

ACR_PWD = "urn:bff:acr:pwd"  # noqa: S105 - an acr URN, not a password
ACR_MFA = "urn:bff:acr:mfa"
#: The demo's second factor.
DEMO_OTP = "424242"


def requested_acr(params: Sequence[tuple[str, str]] | None) -> str:
    """The level an authorization request asks for: ``mfa`` when its ``acr_values`` list it, else ``pwd``."""
    acr_values = dict(params or []).get("acr_values", "")
    return ACR_MFA if ACR_MFA in acr_values.split() else ACR_PWD


def satisfies(acr: str, wanted: str) -> bool:
    return wanted == ACR_PWD or acr == ACR_MFA


def check_otp(code: str) -> bool:
    return secrets.compare_digest(code.strip().encode(), DEMO_OTP.encode())


def amr(acr: str) -> list[str]:
    """RFC 8176 2: ``pwd``, plus ``otp`` for the second factor."""
    return ["pwd", "otp"] if acr == ACR_MFA else ["pwd"]
