"""The benchmark's own HTTP client (``tests.bench.client``) against a real server on loopback: every header set is
sent exactly once over the keep-alive connections, and each answer other than 200 is reported with its body."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.bench.client import Connection, each_once
from tests.support.servers import serve


def _app(seen: list[str]) -> Starlette:
    async def api(request: Request) -> Response:
        cookie = request.headers.get("cookie", "")
        seen.append(cookie)
        if cookie.endswith("-gone"):
            return JSONResponse({"error": "session_expired"}, status_code=401)
        return Response(b'{"ok":true}' * 100, media_type="application/json")  # a body longer than one read

    return Starlette(routes=[Route("/api", api)])


async def test_each_header_set_is_sent_once_and_failures_say_what_came_back() -> None:
    seen: list[str] = []
    headers = [{"Cookie": f"s={i}-gone" if i % 50 == 7 else f"s={i}"} for i in range(400)]
    with serve(_app(seen), lifespan="off") as url:
        failures = await each_once(url, "/api", headers, connections=8)
    assert sorted(seen) == sorted(h["Cookie"] for h in headers)
    assert len(failures) == 8
    assert all(f == '401 {"error":"session_expired"}' for f in failures)


async def test_a_connection_stays_open_across_requests_and_reads_the_whole_body() -> None:
    seen: list[str] = []
    with serve(_app(seen), lifespan="off") as url:
        connection = await Connection.open(url)
        try:
            first = await connection.get("/api", {"Cookie": "s=1"})
            second = await connection.get("/api", {"Cookie": "s=2-gone"})
        finally:
            connection.close()
    assert first == (200, b'{"ok":true}' * 100)
    assert second[0] == 401
    assert seen == ["s=1", "s=2-gone"]
