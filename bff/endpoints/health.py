"""``GET /healthz`` (the process is alive) and ``GET /readyz`` (the store answers and the IdP metadata is loaded)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bff.endpoints.common import NO_STORE, json_error
from bff.errors import NotReady, SessionStoreUnavailable
from bff.oidc.provider import IdentityProvider
from bff.session.store import SessionStore


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"}, headers=NO_STORE)


class Readyz:
    def __init__(self, store: SessionStore, idp: IdentityProvider) -> None:
        self.store = store
        self.idp = idp

    async def handle(self, request: Request) -> Response:
        checks = {"store": "ok", "idp": "ok" if self.idp.ready else "metadata not loaded"}
        try:
            await self.store.ping()
        except SessionStoreUnavailable:
            checks["store"] = "unavailable"
        if all(v == "ok" for v in checks.values()):
            return JSONResponse({"status": "ready", "checks": checks}, headers=NO_STORE)
        response = json_error(NotReady("not ready: " + ", ".join(f"{k} {v}" for k, v in checks.items() if v != "ok")))
        return response
