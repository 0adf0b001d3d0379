"""Each route's upstream, reached as bff reaches it (the route's ``ca_bundle`` and client certificate): the TLS
handshake, whether it answers, and what it answers to a request without a token.

An upstream that serves a token-protected route's base path to anyone (2xx without a token) is a WARN: it
trusts whoever reaches it, so only the network keeps others from bypassing bff.
"""

from __future__ import annotations

import asyncio

from bff.config import Config, RouteSettings
from bff.doctor.probe import NoAnswer, call, client
from bff.doctor.report import Check, failed, passed, skipped, warned
from bff.idp_http import create_idp_client


def check_id(route: RouteSettings, name: str) -> str:
    return f"upstream[{route.path}].{name}"


async def check_upstreams(config: Config, call_timeout: float) -> list[Check]:
    results = await asyncio.gather(*(_route(route, call_timeout) for route in config.routes))
    return [check for checks in results for check in checks]


async def _route(route: RouteSettings, call_timeout: float) -> list[Check]:
    ids = [check_id(route, name) for name in ("tls", "reachable", "without_token")]
    if route.proxy:
        return [skipped(i, f"{route.path} reaches its upstream through a forward proxy: not probed") for i in ids]
    if route.client_cert and route.client_key:
        password = route.client_key_password.reveal() if route.client_key_password is not None else None
        http = create_idp_client(
            timeout=call_timeout, ca_bundle=route.ca_bundle, client_cert=(route.client_cert, route.client_key, password)
        )
    else:
        http = client(call_timeout, route.ca_bundle)
    async with http:
        answer = await call(http, "GET", route.upstream)
    https = route.upstream.startswith("https://")
    if isinstance(answer, NoAnswer) and answer.tls:
        return [
            failed(
                ids[0],
                answer.reason,
                f"give {route.upstream} a certificate for its host name, or set routes[].ca_bundle for route"
                f" {route.path} to the CA that issued it",
            ),
            skipped(ids[1], "the TLS handshake failed"),
            skipped(ids[2], "the TLS handshake failed"),
        ]
    tls = (
        passed(ids[0], "certificate verified for the upstream's host name")
        if https
        else passed(ids[0], "plain http to a loopback host (allowed for loopback only)")
    )
    if isinstance(answer, NoAnswer):
        return [
            tls,
            failed(ids[1], answer.reason, f"start the upstream of {route.path} or fix routes[].upstream"),
            skipped(ids[2], "the upstream did not answer"),
        ]
    reachable = passed(ids[1], f"{route.upstream} answered HTTP {answer.status}")
    if route.token in ("none", "user_or_none"):
        return [tls, reachable, passed(ids[2], f"token = {route.token!r}: anonymous requests are expected")]
    if 200 <= answer.status < 300:
        unguarded = warned(
            ids[2],
            f"{route.upstream} answered HTTP {answer.status} without a token on a token = {route.token!r} route:"
            " anyone who reaches the upstream directly bypasses bff",
            "make the upstream require and verify the bearer token, or keep it reachable from bff only",
        )
        return [tls, reachable, unguarded]
    if answer.status >= 500:
        return [
            tls,
            reachable,
            warned(ids[2], f"{route.upstream} answered HTTP {answer.status}", "check the upstream's health"),
        ]
    return [tls, reachable, passed(ids[2], f"without a token: HTTP {answer.status}")]
