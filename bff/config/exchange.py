"""A route's ``exchange = { audience = "...", resource = "...", scope = "..." }`` (RFC 8693 token exchange)."""

from __future__ import annotations

import re

from bff.config.reader import Reader, check_url, table
from bff.config.settings import ExchangeSettings
from bff.config.values import TokenPolicy

#: RFC 6749 3.3 scope-token: %x21 / %x23-5B / %x5D-7E.
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")
#: An audience is an opaque name (RFC 8693 2.1): printable ASCII without spaces, of a sane length.
_AUDIENCE = re.compile(r"^[\x21-\x7e]{1,256}$")


def read_exchange(
    r: Reader, token: TokenPolicy, *, resource: str | None, scopes: tuple[str, ...]
) -> ExchangeSettings | None:
    """The route's exchange settings, or None when it has none."""
    if "exchange" not in r.data:
        r.seen.add("exchange")
        return None
    t = table(r, "exchange", ExchangeSettings)
    audience = t.optional("audience")
    if audience is not None and not _AUDIENCE.match(audience):
        t.problem("audience", "must be 1 to 256 printable ASCII characters without spaces")
    target = t.optional("resource")
    if target is not None:
        check_url(t, "resource", target)
    scope = t.optional("scope")
    if scope is not None:
        tokens = scope.split(" ")
        if not all(_SCOPE_TOKEN.match(s) for s in tokens):
            t.problem("scope", "must be scope names separated by single spaces (RFC 6749 3.3), like 'orders:read'")
    if isinstance(r.data["exchange"], dict) and audience is None and target is None:
        t.problem("audience", "an exchange needs an audience or a resource: the upstream the token is limited to")
    t.finish()
    if token not in ("user", "user_or_none"):
        r.problem(
            "exchange",
            "applies only to token = 'user' or 'user_or_none' (the user's token is exchanged)",
        )
    if resource is not None or scopes:
        r.problem(
            "exchange",
            "cannot be combined with the route's resource or scopes (those refresh a token of the route's own);"
            " put them in exchange = { resource = ..., scope = ... }",
        )
    return ExchangeSettings(audience=audience, resource=target, scope=scope)
