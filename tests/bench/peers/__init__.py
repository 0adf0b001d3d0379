"""The BFFs a team would pick instead of bff, run in the same benchmark with the same upstream, Redis and load:
Apache httpd with mod_auth_openidc (``apache.py``) and a Node BFF of express, express-session in Redis,
openid-client and http-proxy-middleware (``node.py``, ``../node_bff/``). Each logs in through the reference IdP as a
browser would, keeps its tokens server-side in Redis behind a session cookie, and proxies ``/api/`` to the upstream
with the access token as a bearer.

Before a peer is timed, :func:`check_proxy` proves it proxies as bff does: the upstream's body comes back byte for
byte, the upstream saw ``Authorization: Bearer`` with an access token the IdP accepts (its ``/userinfo`` answers for
the benchmark's user), and without the session cookie no request reaches the upstream with a token. A peer whose
packages are missing or that cannot start is skipped (:class:`Skipped`), said so, and its target not enforced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx

from tests.bench.idp import USERNAME
from tests.bench.nginx import AUTHORIZATION_PATH, UPSTREAM_BODY
from tests.bench.servers import API_PATH
from tests.bench.system import Process


class Skipped(Exception):
    """A peer that cannot run on this machine; the message says why (and how to install what is missing)."""


@dataclass
class Peer:
    """A running peer, logged in: ``url + API_PATH`` with ``headers`` is what wrk sends it."""

    name: str
    url: str
    process: Process
    headers: dict[str, str] = field(default_factory=dict)
    #: Processes beside ``process`` that belong to it (stopped with it).
    helpers: list[Process] = field(default_factory=list)

    def stop(self) -> None:
        for process in (self.process, *self.helpers):
            process.stop()


async def check_proxy(name: str, url: str, headers: Mapping[str, str], idp_url: str) -> str:
    """Raise when the proxy at ``url`` does not answer as bff does; a line saying what was checked."""
    prefix = API_PATH.rsplit("/", 2)[0]  # "/api": the route every proxy under test serves
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(url + API_PATH, headers=dict(headers))
        if answer.status_code != 200 or answer.content != UPSTREAM_BODY.encode():
            raise RuntimeError(f"{name}: {API_PATH} answered {answer.status_code}, not the upstream's body: "
                               f"{answer.text[:200]!r}")  # fmt: skip
        echoed = (await http.get(url + prefix + AUTHORIZATION_PATH, headers=dict(headers))).text
        scheme, _, token = echoed.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise RuntimeError(f"{name}: the upstream saw no bearer token (Authorization: {echoed[:40]!r})")
        userinfo = await http.get(f"{idp_url}/userinfo", headers={"Authorization": f"Bearer {token}"})
        if userinfo.status_code != 200 or userinfo.json().get("preferred_username", USERNAME) != USERNAME:
            raise RuntimeError(f"{name}: the IdP refused the bearer the upstream saw ({userinfo.status_code})")
        anonymous = await http.get(url + prefix + AUTHORIZATION_PATH, headers={"X-CSRF": "1"})
        if anonymous.status_code == 200 and anonymous.text:
            raise RuntimeError(f"{name}: a request without the session cookie reached the upstream with a token")
    return (
        f"{name}: body identical ({len(answer.content)} B), upstream saw a bearer the IdP accepts, "
        f"no token without the cookie ({anonymous.status_code})"
    )
