"""Twelve-factor config with real processes: ``bff serve --workers 2`` whose route comes from
``BFF_ROUTES__0__*`` variables and whose egress is a real forward proxy on loopback named by ``HTTP_PROXY`` (with
credentials), as a Kubernetes Deployment in a corporate network would set them. Both planes leave through the proxy:
the IdP calls (httpx) and the proxied API calls; the proxy's password shows in no log line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.bff_process import serving_bff
from tests.support.forward_proxy import forward_proxy
from tests.support.oidc_provider import TestProvider
from tests.support.redis_server import RedisProcess

PASSWORD = "egress-password-0815"


def environment(proxy_port: int, upstream: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and not k.startswith("BFF_")}
    return {
        **env,
        "PYTHONUNBUFFERED": "1",
        "HTTP_PROXY": f"http://egress:{PASSWORD}@127.0.0.1:{proxy_port}",
        "BFF_ROUTES__0__UPSTREAM": upstream,
        "BFF_ROUTES__0__TOKEN": "none",
        "BFF_ROUTES__0__SET_HEADERS": '{ "X-Tenant" = "acme" }',
    }


def test_bff_serve_takes_its_route_from_the_environment_and_leaves_through_the_proxy(
    tmp_path: Path, redis_process: RedisProcess, idp: TestProvider, ok_upstream: str
) -> None:
    with (
        forward_proxy(credentials=("egress", PASSWORD)) as (proxy_port, proxy_log),
        serving_bff(
            tmp_path,
            redis_url=redis_process.url,
            provider=idp,
            upstream="http://127.0.0.1:9/never-used",
            args=["--workers", "2"],
            env=environment(proxy_port, ok_upstream),
            inherit_env=False,
        ) as bff,
    ):
        config, log = bff.config, bff.log
        explained = subprocess.run(
            [sys.executable, "-m", "bff", "check", "--config", str(config), "--explain"],
            env=environment(proxy_port, ok_upstream),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for _ in range(4):  # both workers, whichever takes the connection
            answer = httpx.get(f"{bff.url}/api/items?x=1", headers={"X-CSRF": "1"}, timeout=10)
            assert (answer.status_code, answer.text) == (200, "ok")
    upstream_port = ok_upstream.rsplit(":", 1)[1].rstrip("/")
    api = [r for r in proxy_log.requests if r.startswith(f"GET http://127.0.0.1:{upstream_port}/")]
    assert api == [f"GET http://127.0.0.1:{upstream_port}/items?x=1"] * 4
    assert any(r.startswith(f"GET {idp.issuer}") for r in proxy_log.requests)  # the IdP calls too
    assert all(proxy_log.authorized)
    assert all(b"x-tenant: acme" in head for head in proxy_log.forwarded if b"/items" in head)
    lines = {line.split(" = ", 1)[0]: line for line in explained.splitlines()}
    assert lines["routes[0].upstream"].endswith("# env BFF_ROUTES__0__UPSTREAM")
    assert lines["routes[0].token"].endswith("# env BFF_ROUTES__0__TOKEN")
    assert f"# file {config}:" in lines["routes[0].path"]
    assert PASSWORD not in explained
    assert PASSWORD not in log.read_text()
