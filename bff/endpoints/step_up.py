"""Step-up authentication (RFC 9470) at the login and the callback; the contract is in docs/step-up.md.

``/bff/login?acr_values=...&max_age=...`` asks the IdP for a stronger or fresher authentication (``max_age=0``
also sends ``prompt=login``). The values are checked with ``bff.step_up`` and, when ``[oidc] acr_values_allowed``
is set, against it. The callback then holds the IdP to what the login asked for, before the current session is
touched, so a failed step-up (400 ``step_up_failed``) leaves the user logged in as before:

* ``acr_values`` sent: the ID token's ``acr`` must be one of them (OpenID Connect Core 3.1.3.7 step 12 leaves this
  to the client; RFC 9470 4: the client checks what it got);
* ``max_age`` sent: ``auth_time`` must be present and at most ``max_age`` (plus ``[oidc] clock_skew``) old, and not
  in the future (Core 3.1.3.7 step 13);
* a browser with a session: the step-up must return the same ``sub`` (a step-up is not a change of user).

On success the callback replaces the session with a new one under a fresh id, as after any login (no fixation).
"""

from __future__ import annotations

from starlette.requests import Request

from bff.config import Config
from bff.errors import BadRequest, StepUpFailed
from bff.models import LoginState
from bff.step_up import InvalidStepUp, StepUp
from bff.types import JSONObject


def requested_step_up(request: Request, config: Config) -> StepUp:
    """The step-up a ``/bff/login`` request asks for (empty for a plain login); ``BadRequest`` when malformed or not
    allowed."""
    params = request.query_params
    if len(params.getlist("acr_values")) > 1 or len(params.getlist("max_age")) > 1:
        raise BadRequest("acr_values and max_age may be given once each")
    try:
        step_up = StepUp.parse(params.get("acr_values"), params.get("max_age"))
    except InvalidStepUp as exc:
        raise BadRequest(str(exc)) from exc
    allowed = config.oidc.acr_values_allowed
    if allowed and not set(step_up.acr_values) <= set(allowed):
        raise BadRequest("acr_values asks for a value that [oidc] acr_values_allowed does not list")
    return step_up


def check_step_up(
    login: LoginState, claims: JSONObject, *, previous_sub: str | None, now: float, leeway: float
) -> None:
    """Refuse (``StepUpFailed``) an ID token that does not meet the step-up ``login`` asked for (module docstring)."""
    if not login.acr_values and login.max_age is None:
        return
    if previous_sub is not None and claims.get("sub") != previous_sub:
        raise StepUpFailed("the step-up login returned another user; the current session is kept")
    if login.acr_values and claims.get("acr") not in login.acr_values:
        raise StepUpFailed("the identity provider did not authenticate with a requested acr; the session is kept")
    if login.max_age is not None:
        auth_time = claims.get("auth_time")
        if not isinstance(auth_time, int | float) or isinstance(auth_time, bool):
            raise StepUpFailed("the ID token has no auth_time although max_age was sent (OIDC Core 3.1.3.7 step 13)")
        if now - auth_time > login.max_age + leeway or auth_time > now + leeway:
            raise StepUpFailed("the authentication is older than max_age allows; the session is kept")
