"""``X-Request-Id``: generated cheaply when absent, kept only when it is a short safe token, never echoed otherwise;
through a real proxy it replaces the browser's header upstream and the upstream's header in the answer."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bff.config import RouteSettings
from bff.telemetry.exchange import Exchange, Observers
from bff.telemetry.request_ids import MAX_LENGTH, RequestIdGenerator, RequestIds, is_valid
from bff.types import Receive, Scope, Send
from tests.proxy.conftest import StubBearer, run_proxy
from tests.support.servers import serve

SAFE = re.compile(r"[A-Za-z0-9._:\-]{1,64}")


def started(headers: list[tuple[bytes, bytes]], observer: RequestIds | None = None) -> Exchange:
    exchange = Exchange({"method": "GET", "path": "/api/x", "headers": headers}, "/api", 0.0)
    (observer or RequestIds()).start(exchange)
    return exchange


def test_generated_ids_are_unique_short_and_safe() -> None:
    generate = RequestIdGenerator()
    ids = [generate() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(SAFE.fullmatch(i) for i in ids)
    assert RequestIdGenerator()() != RequestIdGenerator()()  # another process prefix


@pytest.mark.parametrize(
    "value",
    [b"abc", b"0af7651916cd43dd8448eb211c80319c", b"Root=1-67891233-abcdef", b"a" * MAX_LENGTH, b"f47ac10b-58cc"],
)
def test_a_safe_id_is_kept(value: bytes) -> None:
    if b"=" in value:
        assert not is_valid(value)
        return
    exchange = started([(b"x-request-id", value)])
    assert exchange.request_id == value.decode()
    assert exchange.upstream_headers == [("x-request-id", value.decode())]
    assert exchange.response_headers == [(b"x-request-id", value)]


@given(st.binary(max_size=200))
def test_an_unsafe_id_is_replaced_never_echoed(value: bytes) -> None:
    exchange = started([(b"host", b"x"), (b"x-request-id", value)])
    assert exchange.request_id is not None
    assert SAFE.fullmatch(exchange.request_id)
    if is_valid(value):
        assert exchange.request_id == value.decode()
    else:
        assert exchange.request_id.encode() != value
        assert len(value) > MAX_LENGTH or not SAFE.fullmatch(value.decode("latin-1"))
        assert exchange.response_headers == [(b"x-request-id", exchange.request_id.encode())]


@pytest.mark.parametrize(
    "value", [b"", b"a" * (MAX_LENGTH + 1), b"<script>", b"a\r\nSet-Cookie: x=1", b"id with space", b"\xff"]
)
def test_hostile_ids_are_replaced(value: bytes) -> None:
    exchange = started([(b"x-request-id", value)])
    assert exchange.request_id is not None
    assert exchange.request_id.encode() != value
    assert SAFE.fullmatch(exchange.request_id)


def test_an_absent_id_is_generated() -> None:
    generate = RequestIdGenerator()
    observer = RequestIds(generate)
    first, second = started([], observer), started([], observer)
    assert first.request_id != second.request_id


async def own_id_upstream(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers with the X-Request-Id values it received in the body and one of its own in the head."""
    if scope["type"] != "http":
        return
    received = b",".join(v for k, v in scope["headers"] if k == b"x-request-id")
    headers = [(b"x-request-id", b"upstream-own"), (b"content-length", str(len(received)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": received})


@pytest.fixture(scope="module")
def ids_url() -> Iterator[str]:
    with serve(own_id_upstream, lifespan="off") as upstream:
        routes = [RouteSettings(path="/api", upstream=upstream)]
        with run_proxy(routes, StubBearer(), observers=Observers([RequestIds()])) as url:
            yield url


def _upstream_ids(response: httpx.Response) -> list[str]:
    return response.text.split(",") if response.text else []


def test_through_the_proxy_a_valid_id_goes_upstream_once_and_comes_back(ids_url: str) -> None:
    with httpx.Client(base_url=ids_url, headers={"X-CSRF": "1"}) as client:
        response = client.get("/api/echo", headers={"X-Request-Id": "abc-123"})
    assert _upstream_ids(response) == ["abc-123"]
    assert response.headers.get_list("x-request-id") == ["abc-123"]


def test_through_the_proxy_an_invalid_id_is_replaced_both_ways(ids_url: str) -> None:
    with httpx.Client(base_url=ids_url, headers={"X-CSRF": "1"}) as client:
        response = client.get("/api/echo", headers={"X-Request-Id": "<img src=x>"})
    sent = _upstream_ids(response)
    assert len(sent) == 1
    assert sent[0] != "<img src=x>"
    assert SAFE.fullmatch(sent[0])
    assert response.headers.get_list("x-request-id") == sent


def test_through_the_proxy_a_refusal_carries_the_id_too(ids_url: str) -> None:
    with httpx.Client(base_url=ids_url) as client:
        response = client.get("/api/echo", headers={"X-Request-Id": "refused-1"})
    assert response.status_code == 401
    assert response.headers.get_list("x-request-id") == ["refused-1"]


def test_ids_stay_unique_across_batches_and_each_pair_carries_its_own_id() -> None:
    from bff.telemetry.request_ids import BATCH, RAW_HEADER

    observer = RequestIds(RequestIdGenerator())
    exchanges = [started([], observer) for _ in range(2 * BATCH + 3)]
    ids = [ex.request_id for ex in exchanges]
    assert len(set(ids)) == len(ids)
    for ex in exchanges:
        assert ex.request_id is not None
        assert ex.upstream_headers == [("x-request-id", ex.request_id)]
        assert ex.response_headers == [(RAW_HEADER, ex.request_id.encode("ascii"))]


def test_a_forked_child_draws_ids_of_its_own() -> None:
    # The parent's unused batch must not be handed out again in the child (two processes, one id).
    generate = RequestIdGenerator()
    parent_first = generate()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, then exit without pytest's teardown
        try:
            os.write(write, generate().encode("ascii"))
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 200).decode("ascii")
    os.close(read)
    os.waitpid(pid, 0)
    parent_next = generate()
    assert child.split("-")[0] != parent_first.split("-")[0]
    assert child not in (parent_first, parent_next)
