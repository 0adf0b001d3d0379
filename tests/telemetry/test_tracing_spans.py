"""Traces of real requests, in-process: bff, the test OpenID Provider and an upstream as real servers on loopback,
spans caught by the SDK's in-memory exporter. A login, proxied calls, a refresh, a failing upstream and browsers
that send their own ``traceparent``: the span tree, its attributes, what the upstream and the IdP received, and
that no span holds a token, cookie, code, state, secret or query value."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from bff.config import TracingSettings
from bff.errors import SessionStoreUnavailable
from bff.session.redis_store import RedisStore
from bff.session.traced_store import TracedStore
from bff.telemetry.tracing import Tracing
from bff.types import ASGIApp, Receive, Scope, Send
from tests.support.asgi import ok_answer
from tests.support.browser import Browser
from tests.support.leak_guard import GUARD
from tests.support.oidc_provider import TestProvider
from tests.support.servers import free_port, serve
from tests.support.sessions import expire_access_token
from tests.support.stack import Stack, running_bff
from tests.support.tracing import Recorder

XHR = {"X-CSRF": "1"}
HOSTILE = "hostileQueryValue-0123456789abcdef"
BROWSER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
BROWSER_SPAN = "00f067aa0ba902b7"
BROWSER_PARENT = f"00-{BROWSER_TRACE}-{BROWSER_SPAN}-01"


@dataclass
class Traced:
    stack: Stack
    exporter: InMemorySpanExporter
    upstream: Recorder
    idp: Recorder

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


def tracing(exporter: InMemorySpanExporter, *, propagate: bool = False) -> Tracing:
    settings = TracingSettings(enabled=True, propagate_from_browser=propagate)
    return Tracing(settings, processor=SimpleSpanProcessor(exporter))


@contextlib.contextmanager
def traced_stack(
    *, propagate: bool = False, upstream_url: str | None = None, answer: ASGIApp = ok_answer
) -> Iterator[Traced]:
    """bff with tracing into memory, the test OpenID Provider and an upstream (``answer``), each recording the W3C
    headers."""
    exporter = InMemorySpanExporter()
    upstream = Recorder(answer)
    provider = TestProvider()
    idp = Recorder(provider.app)
    with serve(upstream, lifespan="off") as api_url, serve(idp) as idp_url:
        provider.issuer = idp_url

        def routes(doc: dict[str, Any]) -> None:
            doc["routes"] = [
                {"path": "/api", "upstream": upstream_url or api_url, "token": "user"},
                {"path": "/public", "upstream": api_url, "token": "none"},
                {"path": "/orders", "upstream": api_url, "token": "user", "exchange": {"audience": "orders-api"}},
                {"path": "/ledger", "upstream": api_url, "token": "user", "exchange": {"audience": "ledger-api"}},
            ]

        with running_bff(provider, idp_url, customize=routes, tracing=tracing(exporter, propagate=propagate)) as stack:
            yield Traced(stack, exporter, upstream, idp)


@pytest.fixture
def traced() -> Iterator[Traced]:
    with traced_stack() as traced:
        yield traced


@pytest.fixture
async def browser(traced: Traced) -> AsyncIterator[Browser]:
    browser = Browser()
    yield browser
    await browser.aclose()


async def login(traced: Traced, browser: Browser) -> list[str]:
    """Log in; returns the codes and states the browser carried."""
    seen: list[str] = []
    for hop in await browser.follow(f"{traced.stack.url}/bff/login"):
        location = hop.headers.get("location", "")
        seen.extend(v for k, v in parse_qsl(urlsplit(location).query) if k in ("code", "state"))
    assert "__Host-bff" in browser.cookies(traced.stack.url)
    return seen


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = named(spans, name)
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def upstream_calls(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    """The CLIENT spans of calls to an upstream (the IdP's have ``bff.route = idp:...``)."""
    return [
        s
        for s in spans
        if s.kind == SpanKind.CLIENT
        and not str(dict(s.attributes or {}).get("bff.route", "")).startswith("idp")
        and not s.name.startswith("store ")
    ]


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    return format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")


def traceparent(span: ReadableSpan) -> str:
    """The W3C ``traceparent`` that names ``span`` (sampled; the SDK may add the random-id flag of level 2)."""
    trace_id, span_id = hex_ids(span)
    return f"00-{trace_id}-{span_id}-{span.context.trace_flags:02x}"


def assert_no_secret(spans: list[ReadableSpan], *extra: str) -> None:
    """No span (name, attributes, events, links, status, resource) holds a secret the guard or the test knows of."""
    text = "\n".join(span.to_json() for span in spans)
    secrets = {s.decode() for s in GUARD.secrets} | {s for s in extra if len(s) >= 8}
    assert len(secrets) > 5
    found = sorted(GUARD.secrets.get(s.encode(), "seen by the browser or planted") for s in secrets if s in text)
    assert not found, f"secrets in spans: {found}"


async def test_a_proxied_call_is_one_trace_across_bff_and_the_upstream(traced: Traced, browser: Browser) -> None:
    seen = await login(traced, browser)
    traced.exporter.clear()
    response = await browser.request("GET", f"{traced.stack.url}/api/items/7?secret={HOSTILE}", headers=XHR)
    assert response.status_code == 200
    spans = traced.spans()

    server = one(spans, "GET /api")
    assert server.kind == SpanKind.SERVER
    assert server.parent is None
    assert dict(server.attributes or {}) == {
        "http.request.method": "GET",
        "url.path": "/api/items/7",
        "http.route": "/api",
        "bff.route": "/api",
        "http.response.status_code": 200,
    }
    assert server.status.status_code == StatusCode.UNSET
    # The store read and the upstream call are the server span's children, in one trace.
    read = one(spans, "store get_and_touch")
    assert read.kind == SpanKind.CLIENT
    assert read.parent is not None
    assert read.parent.span_id == server.context.span_id
    assert dict(read.attributes or {}) == {"db.system.name": "memory", "db.operation.name": "get_and_touch"}
    call = one(spans, "GET")
    assert call.kind == SpanKind.CLIENT
    assert call.parent is not None
    assert call.parent.span_id == server.context.span_id
    assert call.context.trace_id == server.context.trace_id
    attributes = dict(call.attributes or {})
    assert attributes["http.response.status_code"] == 200
    assert attributes["server.address"] == "127.0.0.1"
    assert "url.full" not in attributes
    # The upstream received the trace: the same trace id, its parent the client span.
    assert call.context.trace_flags.sampled
    assert traced.upstream.traceparents[-1] == ("/items/7", traceparent(call))
    assert_no_secret(spans, HOSTILE, browser.cookies(traced.stack.url)["__Host-bff"], *seen)


async def test_the_login_traces_the_idp_calls_and_holds_no_code_or_state(traced: Traced, browser: Browser) -> None:
    seen = await login(traced, browser)
    spans = traced.spans()
    # At startup: discovery, as a root span of its own (no request around it).
    [discovery] = [s for s in spans if dict(s.attributes or {}).get("bff.route") == "idp:discovery"]
    assert (discovery.name, discovery.kind, discovery.parent) == ("GET", SpanKind.CLIENT, None)
    callback = one(spans, "GET /bff/callback")
    assert dict(callback.attributes or {})["http.response.status_code"] == 302
    assert dict(callback.attributes or {})["url.path"] == "/bff/callback"  # never the code and state of its query
    token_call = [s for s in children(spans, callback) if s.name == "POST"]
    assert len(token_call) == 1
    assert dict(token_call[0].attributes or {})["bff.route"] == "idp:token"
    assert ("/token", traceparent(token_call[0])) in traced.idp.traceparents
    assert {"store set", "store index_add"} <= {s.name for s in children(spans, callback)}
    assert_no_secret(spans, browser.cookies(traced.stack.url)["__Host-bff"], *seen)


async def test_a_refresh_is_a_child_span_with_its_outcome_and_the_idp_call_below_it(
    traced: Traced, browser: Browser
) -> None:
    await login(traced, browser)
    sessions = traced.stack.app.sessions
    session_id = sessions.session_id_from_cookie(browser.cookies(traced.stack.url)["__Host-bff"])
    assert session_id is not None
    await expire_access_token(sessions, session_id)
    traced.exporter.clear()
    assert (await browser.request("GET", f"{traced.stack.url}/api/items", headers=XHR)).status_code == 200
    assert traced.stack.provider.refresh_calls == 1
    spans = traced.spans()
    server = one(spans, "GET /api")
    refresh = one(spans, "token refresh")
    assert refresh.parent is not None
    assert refresh.parent.span_id == server.context.span_id
    assert dict(refresh.attributes or {}) == {"bff.refresh.outcome": "ok"}
    below = {s.name for s in children(spans, refresh)}
    assert {"POST", "store lock", "store compare_and_set", "store unlock"} <= below, below
    assert_no_secret(spans, browser.cookies(traced.stack.url)["__Host-bff"], *traced.stack.provider.issued_tokens())


async def test_a_token_exchange_is_its_own_span_with_its_outcome_and_the_idp_call_below_it(
    traced: Traced, browser: Browser
) -> None:
    await login(traced, browser)
    traced.exporter.clear()
    assert (await browser.request("GET", f"{traced.stack.url}/orders/1", headers=XHR)).status_code == 200
    assert (await browser.request("GET", f"{traced.stack.url}/ledger/1", headers=XHR)).status_code == 502
    assert traced.stack.provider.exchange_calls == 2
    spans = traced.spans()
    assert named(spans, "token refresh") == []
    ok, refused = named(spans, "token exchange")
    assert dict(ok.attributes or {}) == {"bff.exchange.outcome": "ok"}
    assert dict(refused.attributes or {}) == {"bff.exchange.outcome": "refused", "error.type": "token_exchange_refused"}
    assert ok.parent is not None
    assert ok.parent.span_id == one(spans, "GET /orders").context.span_id
    assert "POST" in {s.name for s in children(spans, ok)}
    assert_no_secret(spans, browser.cookies(traced.stack.url)["__Host-bff"], *traced.stack.provider.issued_tokens())


async def test_concurrent_requests_join_one_refresh(traced: Traced, browser: Browser) -> None:
    await login(traced, browser)
    sessions = traced.stack.app.sessions
    session_id = sessions.session_id_from_cookie(browser.cookies(traced.stack.url)["__Host-bff"])
    assert session_id is not None
    await expire_access_token(sessions, session_id)
    traced.exporter.clear()
    answers = await asyncio.gather(
        *(browser.request("GET", f"{traced.stack.url}/api/items", headers=XHR) for _ in range(5))
    )
    assert {a.status_code for a in answers} == {200}
    assert traced.stack.provider.refresh_calls == 1
    outcomes = sorted(
        str(dict(s.attributes or {})["bff.refresh.outcome"]) for s in named(traced.spans(), "token refresh")
    )
    assert outcomes.count("ok") == 1
    assert set(outcomes) <= {"ok", "joined"}


async def test_an_unreachable_upstream_fails_both_spans_with_bffs_error_code(browser: Browser) -> None:
    with traced_stack(upstream_url=f"http://127.0.0.1:{free_port()}") as traced:
        await login(traced, browser)
        traced.exporter.clear()
        response = await browser.request("GET", f"{traced.stack.url}/api/items", headers=XHR)
        assert response.status_code == 502
        spans = traced.spans()
    server = one(spans, "GET /api")
    assert server.status.status_code == StatusCode.ERROR
    assert server.status.description is None
    assert dict(server.attributes or {})["error.type"] == "bad_gateway"
    assert dict(server.attributes or {})["http.response.status_code"] == 502
    call = one(spans, "GET")
    assert call.status.status_code == StatusCode.ERROR
    assert dict(call.attributes or {})["error.type"] == "bad_gateway"


async def test_a_refused_request_is_traced_with_its_error_code(traced: Traced, browser: Browser) -> None:
    response = await browser.request("GET", f"{traced.stack.url}/api/items", headers=XHR)
    assert response.status_code == 401
    server = one(traced.spans(), "GET /api")
    attributes = dict(server.attributes or {})
    assert (attributes["http.response.status_code"], attributes["error.type"]) == (401, "unauthenticated")
    assert server.status.status_code == StatusCode.UNSET  # a 4xx is the browser's error, not bff's
    assert not upstream_calls(traced.spans())


async def test_a_browser_traceparent_starts_a_new_trace_and_is_only_linked_by_default(
    traced: Traced, browser: Browser
) -> None:
    headers = {**XHR, "traceparent": BROWSER_PARENT, "tracestate": "vendor=chosen-by-the-browser"}
    assert (await browser.request("GET", f"{traced.stack.url}/public/x", headers=headers)).status_code == 200
    server = one(traced.spans(), "GET /public")
    assert server.parent is None
    assert format(server.context.trace_id, "032x") != BROWSER_TRACE
    assert [(format(link.context.trace_id, "032x"), format(link.context.span_id, "016x")) for link in server.links] == [
        (BROWSER_TRACE, BROWSER_SPAN)
    ]
    assert not server.links[0].context.trace_state  # the browser's tracestate is not carried along
    # The upstream gets bff's trace, never the browser's headers.
    trace_id, _ = hex_ids(server)
    _, parent = traced.upstream.traceparents[-1]
    assert parent is not None
    assert parent.startswith(f"00-{trace_id}-")
    assert traced.upstream.tracestates[-1] is None


async def test_a_browser_traceparent_is_continued_when_configured(browser: Browser) -> None:
    with traced_stack(propagate=True) as traced:
        headers = {**XHR, "traceparent": BROWSER_PARENT, "tracestate": "vendor=abc"}
        assert (await browser.request("GET", f"{traced.stack.url}/public/x", headers=headers)).status_code == 200
        server = one(traced.spans(), "GET /public")
        [call] = upstream_calls(traced.spans())
        assert format(server.context.trace_id, "032x") == BROWSER_TRACE
        assert server.parent is not None
        assert format(server.parent.span_id, "016x") == BROWSER_SPAN
        assert not server.links
        assert traced.upstream.traceparents[-1] == ("/x", traceparent(call))
        assert traced.upstream.tracestates[-1] == "vendor=abc"
        # A malformed one is ignored: a new trace, no link, no error.
        traced.exporter.clear()
        bad = {**XHR, "traceparent": f"00-{BROWSER_TRACE}-{BROWSER_SPAN}-01-junk"}
        assert (await browser.request("GET", f"{traced.stack.url}/public/x", headers=bad)).status_code == 200
        server = one(traced.spans(), "GET /public")
        assert server.parent is None
        assert not server.links
        assert format(server.context.trace_id, "032x") != BROWSER_TRACE


async def expired_session(traced: Traced, browser: Browser) -> None:
    await login(traced, browser)
    sessions = traced.stack.app.sessions
    session_id = sessions.session_id_from_cookie(browser.cookies(traced.stack.url)["__Host-bff"])
    assert session_id is not None
    await expire_access_token(sessions, session_id)
    traced.exporter.clear()


async def test_a_refresh_refused_with_invalid_grant_says_so(traced: Traced, browser: Browser) -> None:
    await expired_session(traced, browser)
    # Someone else spends the refresh token first: bff's attempt is a reuse, which revokes the family.
    loaded = await traced.stack.app.sessions.load_key(
        traced.stack.app.sessions.key_for(
            traced.stack.app.sessions.session_id_from_cookie(browser.cookies(traced.stack.url)["__Host-bff"]) or ""
        )
    )
    assert loaded is not None
    provider = traced.stack.provider
    async with httpx.AsyncClient() as http:
        spent = await http.post(
            f"{provider.issuer}/token",
            data={"grant_type": "refresh_token", "refresh_token": loaded.session.tokens.refresh_token or ""},
            auth=("spa-bff", provider.client_secret or ""),
        )
    assert spent.status_code == 200
    response = await browser.request("GET", f"{traced.stack.url}/api/items", headers=XHR)
    assert response.status_code == 401
    refresh = one(traced.spans(), "token refresh")
    assert dict(refresh.attributes or {})["bff.refresh.outcome"] == "invalid_grant"
    assert refresh.status.status_code == StatusCode.ERROR
    [token_call] = [s for s in children(traced.spans(), refresh) if s.name == "POST"]
    assert dict(token_call.attributes or {})["error.type"] == "400"
    server = one(traced.spans(), "GET /api")
    assert dict(server.attributes or {})["error.type"] == "session_expired"
    assert_no_secret(traced.spans(), *provider.issued_tokens())


async def test_a_refresh_while_the_idp_fails_says_idp_unavailable(traced: Traced, browser: Browser) -> None:
    await expired_session(traced, browser)
    traced.stack.provider.fail_token_endpoint_with = 503
    response = await browser.request("GET", f"{traced.stack.url}/api/items", headers=XHR)
    assert response.status_code == 503
    refresh = one(traced.spans(), "token refresh")
    assert dict(refresh.attributes or {})["bff.refresh.outcome"] == "idp_unavailable"
    server = one(traced.spans(), "GET /api")
    assert server.status.status_code == StatusCode.ERROR
    assert dict(server.attributes or {})["error.type"] == "temporarily_unavailable"


async def test_a_refreshed_id_token_for_another_user_says_sub_mismatch(traced: Traced, browser: Browser) -> None:
    # The span names the outcome the metric counts (bff_token_refresh_total{outcome="sub_mismatch"}), not "error".
    await expired_session(traced, browser)
    traced.stack.provider.id_token_claims_override = {"sub": "mallory-0666"}
    response = await browser.request("GET", f"{traced.stack.url}/api/items", headers=XHR)
    assert response.status_code == 401
    refresh = one(traced.spans(), "token refresh")
    assert dict(refresh.attributes or {})["bff.refresh.outcome"] == "sub_mismatch"
    assert refresh.status.status_code == StatusCode.ERROR
    assert_no_secret(traced.spans(), *traced.stack.provider.issued_tokens())


async def test_a_store_that_cannot_be_reached_fails_its_span_with_bffs_code() -> None:
    exporter = InMemorySpanExporter()
    store = TracedStore(
        RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout=1.0), tracing(exporter), system="redis"
    )
    try:
        with pytest.raises(SessionStoreUnavailable):
            await store.get_and_touch("k", 10)
    finally:
        await store.aclose()
    [span] = exporter.get_finished_spans()
    assert span.name == "store get_and_touch"
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description is None  # never the exception's message
    assert dict(span.attributes or {}) == {
        "db.system.name": "redis",
        "db.operation.name": "get_and_touch",
        "error.type": "temporarily_unavailable",
    }
    assert not span.events


async def test_an_idp_that_cannot_be_reached_fails_its_span_with_the_exception_type() -> None:
    exporter = InMemorySpanExporter()
    traced = tracing(exporter)
    async with httpx.AsyncClient(transport=traced.idp_transport(httpx.AsyncHTTPTransport())) as http:
        with pytest.raises(httpx.ConnectError):
            await http.post(f"http://127.0.0.1:{free_port()}/token?code={HOSTILE}", data={"code": HOSTILE})
    [span] = exporter.get_finished_spans()
    assert (span.name, span.kind) == ("POST", SpanKind.CLIENT)
    assert dict(span.attributes or {})["error.type"] == "httpx.ConnectError"
    assert HOSTILE not in span.to_json()


async def trace_context_answer(scope: Scope, receive: Receive, send: Send) -> None:
    """An upstream that answers with trace context of its own (a response ``traceparent``, as some servers send)."""
    headers = [(b"traceparent", f"00-{BROWSER_TRACE}-{BROWSER_SPAN}-01".encode()), (b"tracestate", b"internal=1")]
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain"), *headers]})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_an_upstreams_trace_context_is_not_relayed_to_the_browser(browser: Browser) -> None:
    with traced_stack(answer=trace_context_answer) as traced:
        response = await browser.request("GET", f"{traced.stack.url}/public/x", headers=XHR)
    assert response.status_code == 200
    assert "traceparent" not in response.headers
    assert "tracestate" not in response.headers


async def test_an_unsampled_request_records_nothing_and_still_carries_its_trace_upstream(
    monkeypatch: pytest.MonkeyPatch, browser: Browser
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")  # read by the SDK when bff sets it up
    with traced_stack() as traced:
        await login(traced, browser)
        response = await browser.request("GET", f"{traced.stack.url}/public/x", headers=XHR)
        assert response.status_code == 200
        assert not traced.spans()
        path, parent = traced.upstream.traceparents[-1]
    assert path == "/x"
    assert parent is not None
    version, trace_id, span_id, flags = parent.split("-")
    assert version == "00"
    assert not int(flags, 16) & 1  # not sampled (the SDK may set the random-id flag of level 2)
    assert int(trace_id, 16)
    assert int(span_id, 16)


class RejectsFirstToken:
    """An upstream that answers its first request ``401 invalid_token`` (as if the token were revoked), then 200."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        if self.calls == 1:
            challenge = (b"www-authenticate", b'Bearer error="invalid_token"')
            await send({"type": "http.response.start", "status": 401, "headers": [challenge]})
            await send({"type": "http.response.body", "body": b""})
            return
        await ok_answer(scope, receive, send)


async def test_a_replay_after_a_refresh_is_a_second_upstream_span_with_its_own_traceparent(browser: Browser) -> None:
    with traced_stack(answer=RejectsFirstToken()) as traced:
        await login(traced, browser)
        traced.exporter.clear()
        response = await browser.request("GET", f"{traced.stack.url}/api/items", headers=XHR)
        assert response.status_code == 200
        spans = traced.spans()
    server = one(spans, "GET /api")
    first, second = sorted(upstream_calls(spans), key=lambda s: s.start_time or 0)
    refresh = one(spans, "token refresh")
    assert {first.parent.span_id, second.parent.span_id, refresh.parent.span_id} == {server.context.span_id}  # type: ignore[union-attr]
    assert dict(first.attributes or {})["error.type"] == "401"
    assert dict(second.attributes or {})["http.response.status_code"] == 200
    assert [parent for _, parent in traced.upstream.traceparents[-2:]] == [traceparent(first), traceparent(second)]
