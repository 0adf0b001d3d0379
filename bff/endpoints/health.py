"""``GET /healthz`` (the process is alive) and ``GET /readyz`` (the store answers, the IdP metadata is loaded and the
process is not shutting down)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bff.endpoints.common import NO_STORE, json_error
from bff.errors import NotReady, SessionStoreUnavailable
from bff.oidc.provider import IdentityProvider
from bff.session.store import SessionStore


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"}, headers=NO_STORE)


#: The least time refreshes in flight get at shutdown, even when ``shutdown_timeout`` is spent.
MIN_SHUTDOWN_GRACE = 0.5


class Drain:
    """The process's stop, as the app sees it. ``started`` once told to stop (SIGTERM): ``/readyz`` then answers
    503, so that the load balancer takes the instance out of rotation while it still serves (``[server]
    drain_delay``). ``deadline``: the event-loop time by which the shutdown must be done (``shutdown_timeout``
    after the listener closed); the lifespan's shutdown gives refreshes in flight what is left of it."""

    __slots__ = ("deadline", "started")

    def __init__(self) -> None:
        self.started = False
        self.deadline: float | None = None

    def begin(self) -> None:
        """Safe to call from a signal handler: it only sets a flag."""
        self.started = True

    def time_left(self, now: float, default: float) -> float:
        """How long the work still in flight may take: ``default`` when no server set a deadline (embedded)."""
        if self.deadline is None:
            return default
        return max(self.deadline - now, MIN_SHUTDOWN_GRACE)


class Readyz:
    def __init__(self, store: SessionStore, idp: IdentityProvider, drain: Drain | None = None) -> None:
        self.store = store
        self.idp = idp
        self.drain = drain or Drain()

    async def handle(self, request: Request) -> Response:
        if self.drain.started:
            return json_error(NotReady("not ready: shutting down"))
        checks = {"store": "ok", "idp": "ok" if self.idp.ready else "metadata not loaded"}
        try:
            await self.store.ping()
        except SessionStoreUnavailable:
            checks["store"] = "unavailable"
        if all(v == "ok" for v in checks.values()):
            return JSONResponse({"status": "ready", "checks": checks}, headers=NO_STORE)
        response = json_error(NotReady("not ready: " + ", ".join(f"{k} {v}" for k, v in checks.items() if v != "ok")))
        return response
