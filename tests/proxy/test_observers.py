"""The per-request seam: a recording observer on a real proxy (uvicorn on loopback) and a real echo upstream.

Each test checks the hook order (start, one upstream per upstream answer or failure, end) and what the exchange
said at each point, for: an answer relayed, a 401 refreshed and replayed, a refusal before any upstream call, an
upstream that cannot be reached, and a browser that leaves mid-stream. Observers add headers both ways, their start
hook runs in the request's task before the token provider is asked, and one that raises does not break a request.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from bff.config import RouteSettings
from bff.errors import SessionExpired
from bff.telemetry.exchange import Exchange, Observers
from bff.types import Scope
from tests.proxy.conftest import StubBearer, Upstream, run_proxy, standard_routes
from tests.proxy.test_streaming import BOUND, read_event

MARK: contextvars.ContextVar[str | None] = contextvars.ContextVar("MARK", default=None)


@dataclass
class Event:
    hook: str
    route: str
    status: int
    upstream_status: int | None
    upstream_error: str | None
    error: str | None
    bytes_out: int


@dataclass
class Recorder:
    events: list[Event] = field(default_factory=list)
    ended: threading.Event = field(default_factory=threading.Event)
    last: Exchange | None = None

    def _record(self, hook: str, ex: Exchange) -> None:
        self.events.append(
            Event(hook, ex.route, ex.status, ex.upstream_status, ex.upstream_error, ex.error, ex.bytes_out)
        )

    def start(self, exchange: Exchange) -> None:
        MARK.set("seen-by-the-request-task")
        exchange.upstream_headers.append(("x-observed", "yes"))
        exchange.response_headers.append((b"x-observed-answer", b"yes"))
        self._record("start", exchange)

    def upstream(self, exchange: Exchange) -> None:
        self._record("upstream", exchange)

    def end(self, exchange: Exchange) -> None:
        self.last = exchange
        self._record("end", exchange)
        self.ended.set()

    def hooks(self) -> list[str]:
        assert self.ended.wait(BOUND)
        return [e.hook for e in self.events]

    def reset(self) -> None:
        self.events.clear()
        self.ended.clear()
        self.last = None


class Broken:
    def start(self, exchange: Exchange) -> None:
        raise RuntimeError("observer bug")

    def upstream(self, exchange: Exchange) -> None:
        raise RuntimeError("observer bug")

    def end(self, exchange: Exchange) -> None:
        raise RuntimeError("observer bug")


@dataclass
class MarkSeeingBearer(StubBearer):
    marks: list[str | None] = field(default_factory=list)

    async def bearer(self, scope: Scope, route: RouteSettings) -> str | None:
        self.marks.append(MARK.get())
        return await super().bearer(scope, route)


@pytest.fixture(scope="module")
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(scope="module")
def seen_bearer() -> MarkSeeingBearer:
    return MarkSeeingBearer()


@pytest.fixture(scope="module")
def observed_url(upstream: Upstream, recorder: Recorder, seen_bearer: MarkSeeingBearer) -> Iterator[str]:
    with run_proxy(standard_routes(upstream.url), seen_bearer, observers=Observers([Broken(), recorder])) as url:
        yield url


@pytest.fixture
def observed(observed_url: str, recorder: Recorder, seen_bearer: MarkSeeingBearer) -> Iterator[httpx.Client]:
    recorder.reset()
    seen_bearer.reset()
    seen_bearer.marks.clear()
    with httpx.Client(base_url=observed_url, headers={"X-CSRF": "1"}, timeout=BOUND) as c:
        yield c


def test_an_answer_relayed(observed: httpx.Client, recorder: Recorder, upstream: Upstream) -> None:
    response = observed.get("/api/echo/a?secret=s3cr3t")
    assert response.status_code == 200
    assert recorder.hooks() == ["start", "upstream", "end"]
    start, answered, end = recorder.events
    assert (start.route, start.status, start.upstream_status) == ("/api/echo", 0, None)
    assert (answered.upstream_status, answered.status) == (200, 0)
    assert (end.status, end.upstream_status, end.error, end.bytes_out) == (200, 200, None, len(response.content))
    assert recorder.last is not None
    assert recorder.last.path == b"/api/echo/a"  # never the query
    assert recorder.last.server_address == "127.0.0.1:" + upstream.url.rsplit(":", 1)[1]
    assert recorder.last.upstream_time > 0
    # The observer's headers went both ways; the broken observer changed nothing.
    assert ["x-observed", "yes"] in response.json()["headers"]
    assert response.headers["x-observed-answer"] == "yes"


def test_the_start_hook_runs_in_the_request_task_before_the_token_is_asked(
    observed: httpx.Client, recorder: Recorder, seen_bearer: MarkSeeingBearer
) -> None:
    observed.get("/api/echo/a")
    assert recorder.hooks()
    assert seen_bearer.marks == ["seen-by-the-request-task"]


def test_a_401_refreshed_and_replayed(observed: httpx.Client, recorder: Recorder) -> None:
    response = observed.get("/api/up/protected")
    assert response.status_code == 200
    assert recorder.hooks() == ["start", "upstream", "upstream", "end"]
    assert [e.upstream_status for e in recorder.events[1:]] == [401, 200, 200]
    assert recorder.events[-1].status == 200


def test_a_refusal_before_the_upstream(observed: httpx.Client, recorder: Recorder, upstream: Upstream) -> None:
    response = observed.get("/api/echo/a", headers={"X-CSRF": ""})
    assert response.status_code == 401
    assert recorder.hooks() == ["start", "end"]
    assert (recorder.events[-1].status, recorder.events[-1].error) == (401, "csrf")
    assert recorder.events[-1].upstream_status is None
    assert response.headers["x-observed-answer"] == "yes"
    assert upstream.state.seen == []


def test_a_refresh_that_ends_the_session(
    observed: httpx.Client, recorder: Recorder, seen_bearer: MarkSeeingBearer
) -> None:
    seen_bearer.refresh_error = SessionExpired("gone")
    response = observed.get("/api/up/protected")
    assert response.status_code == 401
    assert recorder.hooks() == ["start", "upstream", "end"]
    assert (recorder.events[-1].status, recorder.events[-1].error) == (401, "session_expired")


def test_an_invalid_path_is_unmatched(observed: httpx.Client, recorder: Recorder) -> None:
    response = observed.get("/api/echo/%2e%2e/x")
    assert response.status_code == 400
    assert recorder.hooks() == ["start", "end"]
    assert (recorder.events[-1].route, recorder.events[-1].error) == ("unmatched", "invalid_path")


def test_an_upstream_that_cannot_be_reached(observed: httpx.Client, recorder: Recorder) -> None:
    response = observed.get("/api/down/x")
    assert response.status_code == 502
    assert recorder.hooks() == ["start", "upstream", "end"]
    failed, end = recorder.events[1:]
    assert (failed.upstream_status, failed.upstream_error) == (None, "connect_error")
    assert (end.status, end.error) == (502, "bad_gateway")


def test_an_upstream_timeout(observed: httpx.Client, recorder: Recorder) -> None:
    response = observed.get("/api/slow", params={"delay": "5"})
    assert response.status_code == 504
    assert recorder.hooks() == ["start", "upstream", "end"]
    assert recorder.events[1].upstream_error == "timeout"
    assert recorder.events[-1].error == "upstream_timeout"


def test_the_browser_leaving_mid_stream(observed: httpx.Client, recorder: Recorder, upstream: Upstream) -> None:
    with observed.stream("GET", "/api/up/sse", params={"n": "2", "interval": "60"}) as response:
        assert read_event(response.iter_raw(), bytearray()) == b"data: 0"
    assert recorder.hooks() == ["start", "upstream", "end"]
    end = recorder.events[-1]
    assert (end.status, end.error) == (200, "client_disconnected")
    assert end.bytes_out > 0
