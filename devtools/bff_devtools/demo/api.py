"""The demo API: a small resource server that the demo SPA calls through bff (``/api/*`` -> here, with the user's
access token). It shows what an upstream behind bff sees: a bearer token, verified with the IdP's public keys
only (``bff_devtools.demo.access_tokens``), and never a cookie.

    GET /me            who is calling: sub, role, scope, when the token expires (never the token)
    GET /items         a list
    GET /admin/stats   role ``admin`` only: 403 ``insufficient_scope`` for anyone else
    POST /admin/actions  step-up (RFC 9470): only for a token whose ``acr`` is ``step_up_acr`` (a second factor)
                       and whose ``auth_time`` is at most ``step_up_max_age`` old; any other is ``401`` with
                       ``Bearer error="insufficient_user_authentication", acr_values="...", max_age=...``
    GET /slow?seconds=2   answers after that long (at most ``max_slow`` seconds)
    GET /ticks?n=10    Server-Sent Events: one tick per ``tick_interval`` (1 s), n of them (at most 60)
    WS  /live          WebSocket (bff route with ``websocket = true``): the bearer token is checked on the
                       handshake (401 JSON denial otherwise); then a tick per ``tick_interval`` and every text
                       message the browser sends comes back as a chat line signed with the caller's ``sub``
    GET /healthz       liveness, no token
    GET /public/info   the IdP's issuer and admin page, no token (bff proxies it on a ``token = "none"`` route)
    GET /reports/summary  only for a token whose ``aud`` is ``reports_audience`` (``demo-reports``): bff's
                       ``/api/reports`` route exchanges the user's token for one (RFC 8693); the login's token, whose
                       ``aud`` is ``demo-api``, is refused here, and a reports token is refused everywhere else

DPoP (RFC 9449 7): ``Authorization: DPoP <token>`` with one ``DPoP`` proof, checked by
``bff_devtools.dpop_proofs`` (signature with the header's jwk, ``typ``, ``htm``, ``htu``, ``iat``, ``jti`` replay,
``ath``), and the token's ``cnf.jkt`` must name the proof's key; a DPoP-bound token sent as a bearer token is
refused (7.2). Failures are ``401`` with ``WWW-Authenticate: DPoP error="invalid_dpop_proof"`` (or
``use_dpop_nonce`` with a ``DPoP-Nonce`` when ``dpop_nonce`` demands server nonces, 9), and nothing is served.

Token failures follow RFC 6750 3: no token is ``401`` with ``WWW-Authenticate: Bearer realm="demo-api"``; a bad one
is ``401`` with ``error="invalid_token"`` and an ``error_description`` (which is also what makes bff refresh the
token and replay the call once); a missing role is ``403`` with ``error="insufficient_scope"``. Bodies are JSON
``{"error": ..., "error_description": ...}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from bff.idp_http import create_idp_client
from bff.types import Clock, system_clock
from bff_devtools.acr import ACR_MFA
from bff_devtools.demo.access_tokens import (
    AccessToken,
    AccessTokenVerifier,
    Blocklist,
    DiscoveredJwks,
    InvalidToken,
    VerifierUnavailable,
)
from bff_devtools.dpop_proofs import InvalidProof, Nonces, ProofVerifier, UseNonce

REALM = "demo-api"
NO_STORE = {"Cache-Control": "no-store"}
_UNSAFE_DESCRIPTION = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")  # RFC 6750 3: error_description characters

ITEMS = [
    {"id": 1, "name": "Refresh-token rotation", "status": "done"},
    {"id": 2, "name": "Back-channel logout", "status": "done"},
    {"id": 3, "name": "Single-flight refresh", "status": "done"},
    {"id": 4, "name": "Tokens never in the browser", "status": "always"},
]


@dataclass(frozen=True)
class DemoApiSettings:
    issuer: str = "http://localhost:9000"
    audience: str = "demo-api"
    #: The ``aud`` that ``/reports/*`` requires: a token bff gets by exchanging the user's (RFC 8693).
    reports_audience: str = "demo-reports"
    algorithms: tuple[str, ...] = ("ES256", "RS256")
    #: Seconds between fetches of the IdP's jti blocklist (fetched when a token is checked, never more often).
    blocklist_interval: float = 2.0
    #: How long the last blocklist copy may be used while the IdP cannot be reached.
    blocklist_max_stale: float = 30.0
    #: At most one JWKS refetch for an unknown kid per this many seconds.
    jwks_min_refetch_interval: float = 10.0
    tick_interval: float = 1.0
    max_ticks: int = 60
    max_slow: float = 10.0
    timeout: float = 5.0
    #: Demand a server nonce in DPoP proofs (RFC 9449 9): the first call of a client is ``use_dpop_nonce``.
    dpop_nonce: bool = False
    #: Accept DPoP-bound tokens only, as a FAPI 2.0 API does: a bearer token is refused.
    dpop_required: bool = False
    #: ``POST /admin/actions`` wants a login at this ``acr`` (the IdP's second factor) ...
    step_up_acr: str = ACR_MFA
    #: ... at most this many seconds ago (RFC 9470 ``max_age``).
    step_up_max_age: int = 300


class _Refused(Exception):
    def __init__(
        self, status: int, error: str | None, description: str, *, scheme: str = "Bearer", extra: str = ""
    ) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.scheme = scheme
        #: More auth-params for the challenge (``acr_values``/``max_age`` of a step-up), already formatted.
        self.extra = extra


def _challenge(error: str | None, description: str, scheme: str = "Bearer", params: str = "") -> str:
    extra = (', algs="ES256 RS256"' if scheme == "DPoP" else "") + params
    if error is None:
        return f'{scheme} realm="{REALM}"{extra}'
    safe = _UNSAFE_DESCRIPTION.sub("?", description)
    return f'{scheme} realm="{REALM}", error="{error}", error_description="{safe}"{extra}'


class DemoApi:
    """The endpoints; ``verifier`` is set by the lifespan (it needs the HTTP client the lifespan opens)."""

    def __init__(self, settings: DemoApiSettings, *, clock: Clock, transport: httpx.AsyncBaseTransport | None) -> None:
        self.settings = settings
        self.clock = clock
        self._transport = transport
        self._verifier: AccessTokenVerifier | None = None
        self._reports_verifier: AccessTokenVerifier | None = None
        nonces = Nonces(clock=clock) if settings.dpop_nonce else None
        self._proofs = ProofVerifier(clock=clock, algorithms=settings.algorithms, nonces=nonces)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        s = self.settings
        async with create_idp_client(timeout=s.timeout, transport=self._transport) as http:
            issuer = s.issuer.rstrip("/")
            jwks = DiscoveredJwks(http, issuer, clock=self.clock, min_refetch_interval=s.jwks_min_refetch_interval)
            blocklist = Blocklist(
                http,
                issuer + "/blocklist",
                clock=self.clock,
                interval=s.blocklist_interval,
                max_stale=s.blocklist_max_stale,
            )
            self._verifier = AccessTokenVerifier(
                jwks, blocklist, issuer=s.issuer, audience=s.audience, clock=self.clock, algorithms=s.algorithms
            )
            self._reports_verifier = AccessTokenVerifier(
                jwks, blocklist, issuer=s.issuer, audience=s.reports_audience, clock=self.clock, algorithms=s.algorithms
            )
            yield

    async def _caller(self, request: Request | WebSocket, *, reports: bool = False) -> AccessToken:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() not in ("bearer", "dpop") or not token:
            raise _Refused(401, None, "a bearer token is required")
        dpop = scheme.lower() == "dpop"
        verifier = self._reports_verifier if reports else self._verifier
        assert verifier is not None
        try:
            caller = await verifier.verify(token)
        except InvalidToken as exc:
            raise _Refused(401, "invalid_token", exc.description, scheme="DPoP" if dpop else "Bearer") from exc
        if not dpop:
            if self.settings.dpop_required:
                raise _Refused(401, "invalid_token", "this API accepts DPoP-bound tokens only", scheme="DPoP")
            if caller.jkt is not None:  # RFC 9449 7.2: a bound token is never good as a bearer token
                raise _Refused(401, "invalid_token", "the token is DPoP-bound; send it with a DPoP proof")
            return caller
        self._check_proof(request, token, caller)
        return caller

    def _check_proof(self, request: Request | WebSocket, token: str, caller: AccessToken) -> None:
        proofs = request.headers.getlist("dpop")
        try:
            if len(proofs) != 1:
                raise InvalidProof("exactly one DPoP proof is required")  # noqa: TRY301 - answered below
            url = str(request.url.replace(query="", fragment=""))
            method = request.method if isinstance(request, Request) else "GET"  # a WebSocket handshake is a GET
            jkt = self._proofs.verify(proofs[0], method=method, url=url, access_token=token)
            if caller.jkt is None or not hmac.compare_digest(jkt, caller.jkt):
                raise InvalidProof("the token is not bound to the DPoP proof's key (cnf.jkt)")  # noqa: TRY301
        except UseNonce as exc:
            raise _Refused(401, "use_dpop_nonce", exc.description, scheme="DPoP") from exc
        except InvalidProof as exc:
            raise _Refused(401, "invalid_dpop_proof", exc.description, scheme="DPoP") from exc

    async def on_refused(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, _Refused)
        body = {"error": exc.error or "missing_token", "error_description": exc.description}
        headers = {**NO_STORE, "WWW-Authenticate": _challenge(exc.error, exc.description, exc.scheme, exc.extra)}
        if exc.error == "use_dpop_nonce" and self._proofs.nonces is not None:
            headers["DPoP-Nonce"] = self._proofs.nonces.current()
        return JSONResponse(body, status_code=exc.status, headers=headers)

    async def on_unavailable(self, request: Request, exc: Exception) -> Response:
        body = {"error": "temporarily_unavailable", "error_description": str(exc)}
        return JSONResponse(body, status_code=503, headers={**NO_STORE, "Retry-After": "5"})

    # --- endpoints -------------------------------------------------------------------------------------------------

    async def me(self, request: Request) -> Response:
        caller = await self._caller(request)
        now = self.clock()
        body = {
            "sub": caller.sub,
            "role": caller.role,
            "scope": list(caller.scope),
            "client_id": caller.client_id,
            "token_issued_at": caller.issued_at,
            "token_expires_at": caller.expires_at,
            "token_expires_in": max(0, round(caller.expires_at - now)),
            "issuer": self.settings.issuer,
        }
        return JSONResponse(body, headers=NO_STORE)

    async def items(self, request: Request) -> Response:
        caller = await self._caller(request)
        return JSONResponse({"owner": caller.sub, "items": ITEMS}, headers=NO_STORE)

    async def reports_summary(self, request: Request) -> Response:
        caller = await self._caller(request, reports=True)
        body = {
            "owner": caller.sub,
            "audience": self.settings.reports_audience,
            "scope": list(caller.scope),
            "token_expires_in": max(0, round(caller.expires_at - self.clock())),
            "done": sum(1 for item in ITEMS if item["status"] == "done"),
        }
        return JSONResponse(body, headers=NO_STORE)

    async def admin_stats(self, request: Request) -> Response:
        caller = await self._caller(request)
        if caller.role != "admin":
            raise _Refused(403, "insufficient_scope", "the admin role is required")
        return JSONResponse({"users": 2, "items": len(ITEMS), "checked_by": caller.sub}, headers=NO_STORE)

    async def admin_action(self, request: Request) -> Response:
        caller = await self._caller(request)
        s = self.settings
        fresh = caller.auth_time is not None and self.clock() - caller.auth_time <= s.step_up_max_age
        if caller.acr != s.step_up_acr or not fresh:
            raise _Refused(
                401,
                "insufficient_user_authentication",
                f"a login with a second factor in the last {s.step_up_max_age} seconds is required",
                scheme="Bearer" if caller.jkt is None else "DPoP",
                extra=f', acr_values="{s.step_up_acr}", max_age={s.step_up_max_age}',  # RFC 9470 3
            )
        body = {"done": "admin action", "by": caller.sub, "acr": caller.acr, "auth_time": caller.auth_time}
        return JSONResponse(body, headers=NO_STORE)

    async def slow(self, request: Request) -> Response:
        await self._caller(request)
        try:
            requested = float(request.query_params.get("seconds", "2"))
        except ValueError:
            requested = -1.0
        if not 0 <= requested < float("inf"):
            return JSONResponse(
                {"error": "invalid_request", "error_description": "seconds must be a non-negative number"},
                status_code=400,
                headers=NO_STORE,
            )
        slept = min(requested, self.settings.max_slow)
        await asyncio.sleep(slept)
        return JSONResponse({"requested": requested, "slept": slept}, headers=NO_STORE)

    async def ticks(self, request: Request) -> Response:
        caller = await self._caller(request)
        try:
            n = int(request.query_params.get("n", "10"))
        except ValueError:
            n = 10
        n = max(1, min(n, self.settings.max_ticks))
        return StreamingResponse(
            self._tick_stream(n, caller.sub),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _tick_stream(self, n: int, sub: str) -> AsyncIterator[bytes]:
        yield f": {n} ticks for {sub}\n\n".encode()  # a comment: the browser sees the stream open at once
        for i in range(1, n + 1):
            if i > 1:
                await asyncio.sleep(self.settings.tick_interval)
            data = json.dumps({"tick": i, "of": n, "at": self.clock()})
            yield f"id: {i}\nevent: tick\ndata: {data}\n\n".encode()
        yield b"event: done\ndata: {}\n\n"

    async def live(self, websocket: WebSocket) -> None:
        """The WebSocket: the token is checked once, on the handshake (bff closes the socket when the session ends)."""
        try:
            caller = await self._caller(websocket)
        except _Refused as exc:
            await websocket.send_denial_response(await self.on_refused(websocket, exc))  # type: ignore[arg-type]
            return
        await websocket.accept()
        ticker = asyncio.ensure_future(self._live_ticks(websocket, caller.sub))
        try:
            while True:
                text = await websocket.receive_text()
                await websocket.send_json({"chat": text[:500], "from": caller.sub, "at": self.clock()})
        except WebSocketDisconnect:
            pass
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await ticker

    async def _live_ticks(self, websocket: WebSocket, sub: str) -> None:
        n = 0
        while True:
            n += 1
            await websocket.send_json({"tick": n, "for": sub, "at": self.clock()})
            await asyncio.sleep(self.settings.tick_interval)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"}, headers=NO_STORE)

    async def info(self, request: Request) -> Response:
        issuer = self.settings.issuer.rstrip("/")
        body = {"issuer": issuer, "admin_url": issuer + "/admin", "audience": self.settings.audience}
        return JSONResponse(body, headers=NO_STORE)


def create_demo_api(
    settings: DemoApiSettings | None = None,
    *,
    clock: Clock = system_clock,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Starlette:
    """The demo API as an ASGI app (its lifespan opens and closes the HTTP client for the IdP)."""
    api = DemoApi(settings or DemoApiSettings(), clock=clock, transport=transport)
    routes = [
        Route("/me", api.me, methods=["GET"]),
        Route("/items", api.items, methods=["GET"]),
        Route("/admin/stats", api.admin_stats, methods=["GET"]),
        Route("/admin/actions", api.admin_action, methods=["POST"]),
        Route("/reports/summary", api.reports_summary, methods=["GET"]),
        Route("/slow", api.slow, methods=["GET"]),
        Route("/ticks", api.ticks, methods=["GET"]),
        WebSocketRoute("/live", api.live),
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/public/info", api.info, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={_Refused: api.on_refused, VerifierUnavailable: api.on_unavailable},
        lifespan=api.lifespan,
    )
