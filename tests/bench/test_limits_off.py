"""The benchmark's limits-off server (``tests.bench.limits_off``) against bff as served, on real sockets: what the
edge limits refuse or time out, the limits-off protocol lets through, and it still serves keep-alive and pipelined
requests and refuses malformed ones as bff does. Each limit is asked of both, so a "limits off" that quietly
enforced them (or a bff that stopped enforcing them) fails here; and the benchmark row's own check (``LimitsCost``)
fails unless bff as served refused the over-limit head and the limits-off one passed it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from bff.serving import uvicorn_settings
from tests.bench.limits import LimitsCost
from tests.bench.limits_off import limits_off_settings
from tests.bench.wrk import WrkResult
from tests.serving.test_edge_limits import SMALL, closed_by_server, connect, hello, read_answer
from tests.support import servers

#: Small limits, so that each deadline passes in a fraction of a second.
TIGHT = replace(SMALL, max_request_headers=5, header_timeout=0.3, keep_alive_timeout=0.3)
#: Past every deadline of TIGHT.
PAST = 1.0
REQUEST = b"GET /h HTTP/1.1\r\nHost: x\r\n\r\n"


@contextlib.contextmanager
def served(limits: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``hello`` served with bff's uvicorn settings (``limits == "on"``) or the launcher's (``"off"``)."""
    monkeypatch.setattr(servers, "uvicorn_settings", uvicorn_settings if limits == "on" else limits_off_settings)
    with servers.serve(hello, lifespan="off", settings=TIGHT) as url:
        yield url


@pytest.mark.parametrize(("limits", "status"), [("on", 431), ("off", 200)])
def test_a_head_with_too_many_fields(limits: str, status: int, monkeypatch: pytest.MonkeyPatch) -> None:
    fields = b"".join(b"X-Pad-%d: 1\r\n" % i for i in range(TIGHT.max_request_headers + 1))
    with served(limits, monkeypatch) as url, connect(url) as sock:
        sock.sendall(b"GET /h HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
        answer = read_answer(sock)
    assert answer is not None
    assert answer.status == status


@pytest.mark.parametrize(("limits", "status"), [("on", 408), ("off", 200)])
def test_a_head_still_arriving_after_header_timeout(limits: str, status: int, monkeypatch: pytest.MonkeyPatch) -> None:
    with served(limits, monkeypatch) as url, connect(url) as sock:
        sock.sendall(REQUEST[:20])
        time.sleep(PAST)
        with contextlib.suppress(OSError):  # bff as served may have closed already
            sock.sendall(REQUEST[20:])
        answer = read_answer(sock)
    assert answer is not None
    assert answer.status == status


@pytest.mark.parametrize(("limits", "closed"), [("on", True), ("off", False)])
def test_a_connection_idle_after_keep_alive_timeout(limits: str, closed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    with served(limits, monkeypatch) as url, connect(url, timeout=PAST) as sock:
        sock.sendall(REQUEST)
        first = read_answer(sock)
        assert first is not None
        assert first.status == 200
        assert closed_by_server(sock) is closed  # waits PAST for the server to close
        if not closed:
            sock.sendall(REQUEST)
            again = read_answer(sock)
            assert again is not None
            assert again.status == 200


def test_limits_off_answers_pipelined_requests_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    with served("off", monkeypatch) as url, connect(url) as sock:
        sock.sendall(REQUEST.replace(b"/h", b"/one") + REQUEST.replace(b"/h", b"/two"))
        buffer = bytearray()
        answers = [read_answer(sock, buffer), read_answer(sock, buffer)]
    assert [a.body.split()[1] if a else None for a in answers] == [b"/one", b"/two"]


def test_limits_off_still_refuses_a_malformed_request(monkeypatch: pytest.MonkeyPatch) -> None:
    with served("off", monkeypatch) as url, connect(url) as sock:
        sock.sendall(b"GET /h HTTP/1.1\r\nHost x\r\n\r\n")
        answer = read_answer(sock)
        assert answer is not None
        assert answer.status == 400
        assert closed_by_server(sock)


def _round(cpu: float, requests: int = 1000, non_2xx: int = 0) -> WrkResult:
    return WrkResult(requests=requests, seconds=1.0, p50=0.001, p99=0.002, non_2xx=non_2xx, socket_errors=0, cpu=cpu)


@pytest.mark.parametrize(
    ("over_limit", "non_2xx", "ok"),
    [((431, 200), 0, True), ((431, 431), 0, False), ((200, 200), 0, False), ((431, 200), 3, False)],
)
def test_the_row_checks_that_it_pairs_limits_on_with_limits_off(
    over_limit: tuple[int, int], non_2xx: int, ok: bool
) -> None:
    cost = LimitsCost([(_round(0.103, non_2xx=non_2xx), _round(0.100)), (_round(0.104), _round(0.100))], 10, over_limit)
    check, row = cost.outcomes()
    assert check.ok is ok
    assert check.kind == "check"
    assert row.ok is None  # reported, no target
    assert row.measured.startswith("1.035x CPU/request")
    assert "1.030 (103.0/100.0 µs); 1.040 (104.0/100.0 µs)" in row.measured  # every round
