"""``token = "client"`` routes through bff's proxy: bff's own client-credentials token reaches the upstream only for
callers with a session, unless the route says ``anonymous = true``."""

from __future__ import annotations

from typing import Any

from tests.support.browser import Browser
from tests.support.echo_upstream import EchoState, EchoUpstream
from tests.support.servers import serve
from tests.support.stack import running_stack

XHR = {"X-CSRF": "1"}


async def test_client_routes_need_a_session_unless_anonymous(browser: Browser) -> None:
    echo = EchoState()
    with serve(EchoUpstream(echo), lifespan="on") as upstream:

        def routes(doc: dict[str, Any]) -> None:
            doc["routes"] = [
                {"path": "/api/reports", "upstream": upstream, "token": "client"},
                {"path": "/api/public", "upstream": upstream, "token": "client", "anonymous": True},
            ]

        with running_stack(customize=routes) as stack:
            refused = await browser.request("GET", f"{stack.url}/api/reports/status/200", headers=XHR)
            assert refused.status_code == 401
            assert refused.json()["error"] == "unauthenticated"
            assert echo.seen == []  # the upstream never heard of it
            grants = [r["grant_type"] for r in stack.provider.token_requests]
            assert "client_credentials" not in grants  # nor was bff's token fetched for it

            public = await browser.request("GET", f"{stack.url}/api/public/status/200", headers=XHR)
            assert public.status_code == 200
            assert echo.seen[-1].authorization is not None
            assert echo.seen[-1].authorization.startswith("Bearer ")

            await browser.follow(f"{stack.url}/bff/login")
            signed_in = await browser.request("GET", f"{stack.url}/api/reports/status/200", headers=XHR)
            assert signed_in.status_code == 200
            assert echo.seen[-1].authorization == echo.seen[-2].authorization  # bff's token, not the user's
