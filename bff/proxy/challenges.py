"""``WWW-Authenticate`` challenges (RFC 9110 11.6.1), parsed once for every decision the proxy takes on an
upstream's 401: refresh and replay (RFC 6750 3.1 ``invalid_token``), DPoP nonces (RFC 9449 9) and step-up
(RFC 9470 3, ``insufficient_user_authentication``).

The grammar, with every field value hostile::

    WWW-Authenticate = #challenge
    challenge        = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
    auth-param       = token BWS "=" BWS ( token / quoted-string )

Several challenges may share one field and several fields one answer (RFC 9110 5.3: they are one list). Schemes and
parameter names are case-insensitive (lower-cased here); quoted-strings lose their quotes and backslash escapes
(RFC 9110 5.6.4). A parameter named twice in one challenge is malformed (RFC 9110 11.2). Bounds: a field of at most
``MAX_FIELD`` characters, ``MAX_FIELDS`` fields, ``MAX_CHALLENGES`` challenges and ``MAX_PARAMS`` parameters each;
beyond them, or at the first syntax error, parsing stops and the field counts as malformed.

``invalid_token`` and DPoP errors are read leniently (from the challenges before an error: the worst a false reading
does is one refresh or one proof and one replay); step-up strictly (any malformed field: no step-up, the upstream's
401 passes through as it is).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from bff.errors import StepUpRequired
from bff.step_up import InvalidStepUp, StepUp

MAX_FIELD = 8 * 1024
MAX_FIELDS = 16
MAX_CHALLENGES = 16
MAX_PARAMS = 32

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"  # noqa: S105 - the RFC 9110 token grammar, not a password
# RFC 9110 5.6.4: qdtext and quoted-pair (obs-text included: field values are octets, read as Latin-1).
_QUOTED = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_SCHEME = re.compile(_TOKEN)
_PARAM = re.compile(rf"({_TOKEN})[ \t]*=[ \t]*({_TOKEN}|{_QUOTED})")
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_OWS = re.compile(r"[ \t]*")
_SP = re.compile(r" +")
_SEPARATORS = re.compile(r"[ \t,]*")
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)

RawHeaders = Iterable[tuple[bytes, bytes]]


@dataclass(frozen=True)
class Challenge:
    scheme: str
    params: dict[str, str] = field(default_factory=dict)
    token68: str | None = None


class _Malformed(Exception):
    pass


def parse_challenges(value: str) -> tuple[list[Challenge], bool]:
    """The challenges of one field value, and whether the whole value parsed (False: those before the error)."""
    found: list[Challenge] = []
    if len(value) > MAX_FIELD:
        return found, False
    try:
        _parse(value, found)
    except _Malformed:
        return found, False
    return found, True


def _parse(s: str, found: list[Challenge]) -> None:
    pos = _SEPARATORS.match(s, 0).end()  # type: ignore[union-attr]  # matches the empty string
    while pos < len(s):
        if len(found) == MAX_CHALLENGES:
            raise _Malformed
        scheme = _SCHEME.match(s, pos)
        if scheme is None:
            raise _Malformed
        pos = scheme.end()
        params: dict[str, str] = {}
        token68: str | None = None
        spaces = _SP.match(s, pos)
        if spaces is not None:
            pos = spaces.end()
            if _PARAM.match(s, pos):
                pos = _params(s, pos, params)
            elif (t68 := _TOKEN68.match(s, pos)) is not None and _ends_element(s, t68.end()):
                token68, pos = t68.group(), t68.end()
        pos = _OWS.match(s, pos).end()  # type: ignore[union-attr]
        if pos < len(s) and s[pos] != ",":
            raise _Malformed
        found.append(Challenge(scheme.group().lower(), params, token68))
        pos = _SEPARATORS.match(s, pos).end()  # type: ignore[union-attr]


def _params(s: str, pos: int, params: dict[str, str]) -> int:
    """Read ``#auth-param`` from ``pos``; returns where the next challenge (or the end) starts."""
    while (param := _PARAM.match(s, pos)) is not None:
        name, raw = param.group(1).lower(), param.group(2)
        if name in params or len(params) == MAX_PARAMS:
            raise _Malformed
        params[name] = _ESCAPE.sub(r"\1", raw[1:-1]) if raw.startswith('"') else raw
        pos = _OWS.match(s, param.end()).end()  # type: ignore[union-attr]
        if pos == len(s):
            return pos
        if s[pos] != ",":
            raise _Malformed
        after = _SEPARATORS.match(s, pos).end()  # type: ignore[union-attr]
        if _PARAM.match(s, after) is None:
            return pos  # the next list element is a new challenge (or nothing)
        pos = after
    raise _Malformed  # pragma: no cover - only called where a parameter matches


def _ends_element(s: str, pos: int) -> bool:
    rest = _OWS.match(s, pos).end()  # type: ignore[union-attr]
    return rest == len(s) or s[rest] == ","


def challenges(raw: RawHeaders) -> tuple[list[Challenge], bool]:
    """Every challenge of the ``WWW-Authenticate`` fields in ``raw``, and whether all of them parsed."""
    found: list[Challenge] = []
    complete = True
    fields = 0
    for name, value in raw:
        if name.lower() != b"www-authenticate":
            continue
        fields += 1
        if fields > MAX_FIELDS:
            return found, False
        parsed, ok = parse_challenges(value.decode("latin-1"))
        found += parsed
        complete = complete and ok
    return found, complete


def challenge_error(raw: RawHeaders, scheme: str) -> str | None:
    """The ``error`` of the first ``scheme`` challenge that has one, lower-cased (lenient: see the module)."""
    for challenge in challenges(raw)[0]:
        if challenge.scheme == scheme and "error" in challenge.params:
            return challenge.params["error"].lower()
    return None


def is_invalid_token_challenge(raw: RawHeaders) -> bool:
    """True if a ``Bearer`` challenge says ``error="invalid_token"`` (RFC 6750 3.1)."""
    return challenge_error(raw, "bearer") == "invalid_token"


def dpop_challenge_error(raw: RawHeaders) -> bytes | None:
    """The ``error`` of a ``DPoP`` challenge (RFC 9449 7.1), lower-cased; None without one."""
    error = challenge_error(raw, "dpop")
    return None if error is None else error.encode("latin-1")


def step_up_challenge(raw: RawHeaders) -> StepUp | None:
    """What an ``insufficient_user_authentication`` challenge (RFC 9470 3) of a ``Bearer`` or ``DPoP`` scheme asks
    for; None unless every field parsed, the challenge is unique and its ``acr_values``/``max_age`` are valid and
    ask for something."""
    found, complete = challenges(raw)
    if not complete:
        return None
    asking = [
        c
        for c in found
        if c.scheme in ("bearer", "dpop") and c.params.get("error") == "insufficient_user_authentication"
    ]
    if len(asking) != 1:
        return None  # none, or two that may ask for different things: which one would be obeyed is unclear
    params = asking[0].params
    try:
        step_up = StepUp.parse(params.get("acr_values"), params.get("max_age"))
    except InvalidStepUp:
        return None
    return step_up or None


def asks_step_up(raw: RawHeaders) -> bool:
    """True if a ``Bearer`` or ``DPoP`` challenge says ``insufficient_user_authentication`` (lenient: a refresh
    never helps there, whatever else the field holds)."""
    return "insufficient_user_authentication" in (challenge_error(raw, "bearer"), challenge_error(raw, "dpop"))


def step_up_refusal(raw: RawHeaders, acr_values_allowed: Collection[str], prefix: str = "") -> StepUpRequired | None:
    """The answer for the SPA when an upstream's 401 asks for a step-up bff can start; None to pass the 401 through
    (no valid challenge, or ``acr_values`` outside a non-empty ``acr_values_allowed``)."""
    step_up = step_up_challenge(raw)
    if step_up is None or (acr_values_allowed and not set(step_up.acr_values) <= set(acr_values_allowed)):
        return None
    return StepUpRequired(
        "the API asks for a stronger or more recent login; navigate to login_url (RFC 9470)",
        acr_values=" ".join(step_up.acr_values) or None,
        max_age=step_up.max_age,
        login_url=step_up.login_url(prefix),
    )
