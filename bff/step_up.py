"""Step-up authentication (RFC 9470): the ``acr_values`` and ``max_age`` that an upstream's challenge or a login
link may ask for, checked once here for both. Standard library only; imports nothing from bff.

Both values come from outside (an upstream's ``WWW-Authenticate``, a URL anyone can craft), end up in the
authorization request and in a JSON answer to the SPA, so only a narrow syntax passes: at most
``MAX_ACR_VALUES`` space-separated values of ``[A-Za-z0-9:._~/-]`` (URNs, URLs without query, short names;
OpenID Connect Core 2 ``acr`` is a StringOrURI), at most ``MAX_ACR_VALUES_LENGTH`` characters in all, and a
``max_age`` of decimal digits up to ``MAX_MAX_AGE`` seconds. Anything else is refused as a whole, never trimmed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlencode

MAX_ACR_VALUES = 8
#: RFC 9470 leaves lengths open; 255 keeps the login URL and the authorization request small.
MAX_ACR_VALUES_LENGTH = 255
#: One year: an authentication older than that is never a useful requirement.
MAX_MAX_AGE = 366 * 24 * 3600
_ACR = re.compile(r"[A-Za-z0-9:._~/-]+")
_DIGITS = re.compile(r"[0-9]{1,10}")


class InvalidStepUp(ValueError):
    """A malformed ``acr_values`` or ``max_age`` (the message says which and why; it never echoes the value)."""


def parse_acr_values(value: str) -> tuple[str, ...]:
    """The space-separated values of ``acr_values`` (OpenID Connect Core 3.1.2.1), in order, without repeats."""
    if len(value) > MAX_ACR_VALUES_LENGTH:
        raise InvalidStepUp(f"acr_values is longer than {MAX_ACR_VALUES_LENGTH} characters")
    values = tuple(dict.fromkeys(value.split(" ")))
    if not value or any(not _ACR.fullmatch(v) for v in values):
        raise InvalidStepUp("acr_values must be space-separated values of letters, digits and ':._~/-'")
    if len(values) > MAX_ACR_VALUES:
        raise InvalidStepUp(f"acr_values has more than {MAX_ACR_VALUES} values")
    return values


def parse_max_age(value: str) -> int:
    """``max_age`` in seconds (OpenID Connect Core 3.1.2.1): a non-negative decimal integer, at most a year."""
    if not _DIGITS.fullmatch(value) or int(value) > MAX_MAX_AGE:
        raise InvalidStepUp(f"max_age must be a whole number of seconds from 0 to {MAX_MAX_AGE}")
    return int(value)


@dataclass(frozen=True)
class StepUp:
    """What a login must achieve beyond a plain one: an ``acr`` among ``acr_values``, an ``auth_time`` within
    ``max_age`` seconds. Empty (neither): a plain login."""

    acr_values: tuple[str, ...] = ()
    max_age: int | None = None

    @classmethod
    def parse(cls, acr_values: str | None, max_age: str | None) -> StepUp:
        """From raw parameters (None: absent); raises :class:`InvalidStepUp`."""
        return cls(
            acr_values=() if acr_values is None else parse_acr_values(acr_values),
            max_age=None if max_age is None else parse_max_age(max_age),
        )

    def __bool__(self) -> bool:
        return bool(self.acr_values) or self.max_age is not None

    def query(self) -> dict[str, str]:
        """As the query parameters of ``/bff/login``."""
        params: dict[str, str] = {}
        if self.acr_values:
            params["acr_values"] = " ".join(self.acr_values)
        if self.max_age is not None:
            params["max_age"] = str(self.max_age)
        return params

    def auth_params(self) -> dict[str, str]:
        """As parameters of the authorization request; ``max_age=0`` also sends ``prompt=login`` (OpenID Connect
        Core 3.1.2.1: "max_age=0 is equivalent to prompt=login")."""
        params = self.query()
        if self.max_age == 0:
            params["prompt"] = "login"
        return params

    def login_url(self, prefix: str = "") -> str:
        """The same-origin URL that starts a login asking for this (the SPA appends ``&returnTo=``); ``prefix``: the
        ``[[frontends]]`` path prefix the request came through."""
        return prefix + "/bff/login?" + urlencode(self.query(), safe=":/")
