"""A real ``bff serve --workers 2`` with ``[tracing] enabled``, exporting OTLP/HTTP to a collector stub on loopback,
through a login at the test OpenID Provider, a proxied call, a token refresh and credentials planted where they do
not belong, with the JSON access log on. The upstream and the IdP record the ``traceparent`` they receive. What was
exported must be one trace per request across the processes, with the right parents, and hold no token, cookie, code,
state or query value anywhere (searched in the raw protobuf bodies as the collector received them)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.support.asgi import ok_answer
from tests.support.bff_process import expire_session_token, wait_ready
from tests.support.browser import Browser
from tests.support.configs import SESSION_KEY, write_config
from tests.support.leak_guard import GUARD
from tests.support.oidc_provider import TestProvider
from tests.support.redis_server import RedisProcess
from tests.support.servers import free_port, serve
from tests.support.tracing import Collector, ExportedSpan, Recorder

XHR = {"X-CSRF": "1"}
HOSTILE = "hostileQueryValue-0123456789abcdef"
SERVER, CLIENT, INTERNAL = 2, 3, 1  # opentelemetry.proto Span.SpanKind


@pytest.fixture
def upstream() -> Iterator[tuple[Recorder, str]]:
    recorder = Recorder(ok_answer)
    with serve(recorder, lifespan="off") as url:
        yield recorder, url


@pytest.fixture
def idp() -> Iterator[tuple[TestProvider, Recorder]]:
    provider = TestProvider()
    recorder = Recorder(provider.app)
    with serve(recorder) as url:
        provider.issuer = url
        yield provider, recorder


@pytest.fixture
def collector() -> Iterator[tuple[Collector, str]]:
    stub = Collector()
    with serve(stub, lifespan="off") as url:
        yield stub, url


def start(config: Path, log: Path, collector_url: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector_url,
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    env.pop("OTEL_SERVICE_NAME", None)
    env.pop("OTEL_SDK_DISABLED", None)
    command = [sys.executable, "-m", "bff", "serve", "--config", str(config), "--workers", "2"]
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM: each worker's lifespan ends, which exports what its span processor still holds."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


async def traffic(origin: str, redis_url: str, config: Path) -> list[str]:
    """Log in, call the API, refresh; returns the codes, states and cookie values the browser saw."""
    seen: list[str] = []
    browser = Browser()
    try:
        for hop in await browser.follow(f"{origin}/bff/login"):
            location = hop.headers.get("location", "")
            seen.extend(v for k, v in parse_qsl(urlsplit(location).query) if k in ("code", "state"))
        cookie = browser.cookies(origin)["__Host-bff"]
        seen.append(cookie)
        assert (await browser.get(f"{origin}/api/items/1?secret={HOSTILE}", headers=XHR)).status_code == 200
        await expire_session_token(redis_url, config, cookie)
        assert (await browser.get(f"{origin}/api/items/2", headers=XHR)).status_code == 200
        planted = {**XHR, "authorization": f"Bearer {HOSTILE}"}
        assert (await browser.http.get(f"{origin}/api/items/3?code={HOSTILE}", headers=planted)).status_code == 401
    finally:
        await browser.aclose()
    return seen


def wait_for_spans(collector: Collector, names: set[str]) -> list[ExportedSpan]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        spans = collector.spans()
        if names <= {s.name for s in spans}:
            return spans
        time.sleep(0.05)
    pytest.fail(f"the collector never received {names - {s.name for s in collector.spans()}}")


def by_id(spans: list[ExportedSpan]) -> dict[str, ExportedSpan]:
    return {s.span_id: s for s in spans}


async def test_bff_serve_exports_one_trace_per_request_across_the_upstream_and_the_idp(
    tmp_path: Path,
    redis_process: RedisProcess,
    idp: tuple[TestProvider, Recorder],
    upstream: tuple[Recorder, str],
    collector: tuple[Collector, str],
) -> None:
    provider, idp_seen = idp
    api, api_url = upstream
    stub, collector_url = collector
    port = free_port()
    config = tmp_path / "bff.toml"
    write_config(
        config,
        port=port,
        redis_url=redis_process.url,
        idp_url=provider.issuer,
        client_secret=provider.client_secret or "",
        upstream=api_url,
    )
    sections = '[tracing]\nenabled = true\n\n[logging]\nformat = "json"\naccess_log = true\n\n[[routes]]'
    config.write_text(config.read_text().replace("[[routes]]", sections, 1))
    origin = f"http://127.0.0.1:{port}"
    GUARD.watch_bff(origin)
    log = tmp_path / "bff.log"
    process = start(config, log, collector_url)
    try:
        wait_ready(port, process, log)
        seen = await asyncio.wait_for(traffic(origin, redis_process.url, config), 60)
        spans = wait_for_spans(stub, {"GET /bff/callback", "GET /api", "token refresh"})
    finally:
        stop(process)
    spans = stub.spans()  # with what the workers exported at shutdown
    assert stub.paths
    assert set(stub.paths) == {"/v1/traces"}
    assert {s.service for s in spans} == {"bff"}
    ids = by_id(spans)

    # Each proxied call that reached the upstream: bff's server span -> client span -> the upstream's traceparent.
    reached = [(path, parent) for path, parent in api.traceparents if path in ("/items/1", "/items/2")]
    assert len(reached) == 2
    for path, parent in reached:
        assert parent is not None, path
        _, trace_id, span_id, _ = parent.split("-")
        call = ids[span_id]
        assert (call.span.kind, call.trace_id, call.name) == (CLIENT, trace_id, "GET")
        server = ids[call.parent_id]
        assert (server.span.kind, server.name, server.trace_id) == (SERVER, "GET /api", trace_id)
        assert server.attributes["url.path"] == f"/api{path}"
        assert server.attributes["http.response.status_code"] == 200
        assert not server.parent_id  # a new trace: the browser sent none
        assert "store get_and_touch" in {s.name for s in spans if s.parent_id == server.span_id}

    # The refresh: a child of the second call's server span, the IdP's token call below it, with its traceparent.
    [refresh] = [s for s in spans if s.name == "token refresh"]
    assert refresh.span.kind == INTERNAL
    assert refresh.attributes == {"bff.refresh.outcome": "ok"}
    second = ids[ids[reached[1][1].split("-")[2]].parent_id]  # type: ignore[union-attr]
    assert refresh.parent_id == second.span_id
    [token_call] = [s for s in spans if s.parent_id == refresh.span_id and s.name == "POST"]
    assert token_call.attributes["bff.route"] == "idp:token"
    received = [parent for path, parent in idp_seen.traceparents if path == "/token" and parent]
    assert any(p.split("-")[1:3] == [token_call.trace_id, token_call.span_id] for p in received), received

    # The refused request: traced with bff's error code, and never its planted credentials.
    refused = [s for s in spans if s.name == "GET /api" and s.attributes.get("http.response.status_code") == 401]
    assert len(refused) == 1
    assert refused[0].attributes["error.type"] == "unauthenticated"
    assert refused[0].attributes["url.path"] == "/api/items/3"

    # The access log names each request's server span; no worker logged a tracing failure.
    lines = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    access = [r for r in lines if r.get("logger") == "bff.access" and r["http.route"] == "/api"]
    servers = {(s.trace_id, s.span_id) for s in spans if s.span.kind == SERVER and s.name == "GET /api"}
    assert len(access) == 3
    assert {(r["trace_id"], r["span_id"]) for r in access} == servers
    assert not [r for r in lines if r.get("severity_text") in ("WARNING", "ERROR", "CRITICAL")], log.read_text()

    # No secret anywhere in what left bff, byte for byte as the collector received it.
    exported = b"\n".join(stub.bodies)
    secrets = {s.decode() for s in GUARD.secrets} | set(provider.issued_tokens()) | {s for s in seen if len(s) >= 8}
    secrets |= {HOSTILE, SESSION_KEY, provider.client_secret or HOSTILE}
    assert len(secrets) > 10
    found = sorted(
        GUARD.secrets.get(s.encode(), "planted or browser-seen value") for s in secrets if s.encode() in exported
    )
    assert not found, f"secrets in the exported spans: {found}"
