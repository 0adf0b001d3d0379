"""The OpenID Provider of the benchmark, in a process of its own: the reference IdP (``bff_devtools.devidp``), or the
suite's ``TestProvider`` (``--idp test-provider``, and the fallback where ``bff_devtools.devidp`` is missing).

Its own process (on the load cores), not a thread of the benchmark: the refresh storm's client runs in the
benchmark's event loop, and an IdP sharing that interpreter would add the client's GIL contention to the latency
it is measured against. In front of the IdP, :class:`TokenEndpointMeter` counts refresh grants (and those refused)
and delays the token endpoint on request; ``GET /_bench/stats`` reports, ``POST /_bench/delay?seconds=S`` sets the
delay. So both IdPs are measured the same way.

    python -m tests.bench.idp --port 9000 --idp devidp --data-dir DIR --redirect-uri URL [--redirect-uri URL ...]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs

import httpx

from bff.types import ASGIApp, Message, Receive, Scope, Send
from tests.bench.system import CpuPlan, Process, pinned, wait_for_port
from tests.support.asgi import read_body, replaying

Kind = Literal["devidp", "test-provider"]
NAMES: dict[Kind, str] = {
    "devidp": "the reference IdP (bff_devtools.devidp, RS256), own process",
    "test-provider": "TestProvider (tests/support/oidc_provider.py, RS256), own process",
}
CLIENT_ID = "spa-bff"
CLIENT_SECRET = "bench-client-secret-0123456789"
#: The user the benchmark logs in as (the reference IdP's demo user).
USERNAME, PASSWORD = "alice", "wonderland"
#: Access tokens outlive the throughput runs: only the storm refreshes (after expiring the session's token).
ACCESS_TOKEN_TTL = 3600


def default_kind() -> Kind:
    return "devidp" if importlib.util.find_spec("bff_devtools.devidp") is not None else "test-provider"


class TokenEndpointMeter:
    """Counts the refresh grants an IdP answers (and those it refuses) and delays its token endpoint."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.delay = 0.0
        self.refresh_calls = 0
        self.refresh_refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path.startswith("/_bench/"):
            await self._control(scope, send)
        elif scope["type"] == "http" and path == "/token" and scope["method"] == "POST":
            await self._token(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _token(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(receive)
        refresh = parse_qs(body.decode("latin-1")).get("grant_type") == ["refresh_token"]
        if refresh:
            self.refresh_calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)

        async def watch(message: Message) -> None:
            if refresh and message["type"] == "http.response.start" and message["status"] != 200:
                self.refresh_refused += 1
            await send(message)

        await self.app(scope, replaying(body, receive), watch)

    async def _control(self, scope: Scope, send: Send) -> None:
        if scope["path"] == "/_bench/delay" and scope["method"] == "POST":
            self.delay = float(parse_qs(scope.get("query_string", b"").decode())["seconds"][0])
        stats = {"refresh_calls": self.refresh_calls, "refresh_refused": self.refresh_refused, "delay": self.delay}
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(stats).encode()})


def _devidp(issuer: str, data_dir: Path, redirect_uris: Sequence[str]) -> ASGIApp:
    from bff_devtools.devidp import ClientRegistration, DevIdPSettings, create_devidp_app

    client = ClientRegistration(
        CLIENT_ID,
        CLIENT_SECRET,
        redirect_uris=tuple(redirect_uris),
        grant_types=("authorization_code", "refresh_token", "client_credentials"),
    )
    settings = DevIdPSettings(
        issuer=issuer, data_dir=data_dir, alg="RS256", access_token_ttl=ACCESS_TOKEN_TTL, clients=(client,)
    )
    return create_devidp_app(settings)


def _test_provider(issuer: str) -> ASGIApp:
    from tests.support.oidc_provider import TestProvider

    provider = TestProvider(access_token_ttl=ACCESS_TOKEN_TTL, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    provider.issuer = issuer
    return provider.app


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--idp", choices=list(NAMES), default=default_kind())
    parser.add_argument("--data-dir", type=Path, help="the reference IdP's signing keys")
    parser.add_argument("--redirect-uri", action="append", default=[], help="the bff callbacks (reference IdP)")
    args = parser.parse_args(argv)
    issuer = f"http://127.0.0.1:{args.port}"
    app = _devidp(issuer, args.data_dir, args.redirect_uri) if args.idp == "devidp" else _test_provider(issuer)
    uvicorn.run(TokenEndpointMeter(app), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


@dataclass
class IdP:
    """Controls a running benchmark IdP."""

    kind: Kind
    url: str
    process: Process
    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET

    @property
    def name(self) -> str:
        return NAMES[self.kind]

    async def stats(self) -> dict[str, float]:
        async with httpx.AsyncClient(timeout=10) as http:
            stats: dict[str, float] = (await http.get(f"{self.url}/_bench/stats")).json()
        return stats

    async def set_delay(self, seconds: float) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            (await http.post(f"{self.url}/_bench/delay", params={"seconds": str(seconds)})).raise_for_status()

    async def token_latency(self, samples: int) -> float:
        """The token endpoint's own median latency in seconds (client-credentials grants, one at a time)."""
        timings = []
        async with httpx.AsyncClient(timeout=30, auth=(self.client_id, self.client_secret)) as http:
            for _ in range(samples):
                start = time.perf_counter()
                (await http.post(f"{self.url}/token", data={"grant_type": "client_credentials"})).raise_for_status()
                timings.append(time.perf_counter() - start)
        return sorted(timings)[len(timings) // 2]


def start_idp(
    kind: Kind, workdir: Path, port: int, redirect_uris: Sequence[str], cores: Sequence[int], plan: CpuPlan, root: Path
) -> IdP:
    command = [sys.executable, "-m", "tests.bench.idp", "--port", str(port), "--idp", kind]
    command += ["--data-dir", str(workdir / "devidp")]
    for uri in redirect_uris:
        command += ["--redirect-uri", uri]
    process = Process("idp", pinned(command, cores, plan), workdir / "idp.log", cwd=str(root))
    wait_for_port(port, process, timeout=30)
    return IdP(kind=kind, url=f"http://127.0.0.1:{port}", process=process)


if __name__ == "__main__":
    main()
