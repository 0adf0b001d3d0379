"""The proxy: a raw ASGI app that forwards ``/api/...`` calls to their route's upstream with a bearer token.

Raw ASGI and one shared keep-alive client (``bff.upstream``), no framework objects on the data plane. Everything that
depends only on the route is computed once, in :class:`~bff.proxy.routes.Route`; a request costs one pass over its
headers.

One request, in order (every refusal is JSON from ``bff.errors`` and happens before any upstream call):

1. ``paths``: the raw path and query are vetted (400 ``invalid_path``); the route is the longest prefix that
   matches on a segment boundary (404 ``not_found``); the method is allowed (405 with ``Allow``; never TRACE).
2. ``csrf.check_csrf`` (401 ``csrf``), before the token provider is even asked; ``Content-Length`` over the route's
   ``max_body`` (413).
3. ``BearerProvider.bearer()`` for the route's token policy; its ``BffError`` is the answer.
4. The request goes to ``upstream + raw path (prefix stripped) + raw query`` with the ``headers`` hygiene. The body
   streams from ``receive()`` (``request_body``: a chunked body is counted against ``max_body`` as it flows: 413 and
   the upstream request is aborted); a body of at most ``replay_limit`` bytes is kept so the request can be replayed.
5. A 401 with ``WWW-Authenticate: Bearer error="invalid_token"`` (or any 401 on a ``refresh_on_401`` route) to a
   request that carried a token and can be replayed: ``refresh_bearer()`` once and one replay; the second answer
   passes through whatever it is (never a loop).
   On a DPoP route (RFC 9449) the token goes as ``Authorization: DPoP`` with a fresh proof from the ``ProofMaker``;
   a 401 ``use_dpop_nonce`` challenge with a valid ``DPoP-Nonce`` is replayed once with the nonce first, and
   ``DPoP error="invalid_token"`` counts as the challenge above.
   A 401 ``insufficient_user_authentication`` (RFC 9470) is never refreshed: it becomes 401 ``step_up_required``
   with a login URL (``challenges``), or passes through when its challenge is malformed or not allowed.
6. The answer streams back chunk by chunk as it arrives (SSE event by event). A failure after the headers went out
   ends the stream unfinished, so the browser sees a truncated body, never a second response.

The browser leaving (``http.disconnect``) cancels the request task, which abandons the upstream request
(``disconnect``). Refusals that say a dependency of bff's own is down (503) are logged per cause (``outage_log``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Sequence
from functools import partial
from ipaddress import IPv4Network, IPv6Network
from time import perf_counter
from typing import Protocol

from bff.config import RouteSettings
from bff.errors import (
    BffError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    StepUpRequired,
    UpstreamError,
    UpstreamTimeout,
)
from bff.proxy import outage_log
from bff.proxy.challenges import asks_step_up, dpop_challenge_error, is_invalid_token_challenge, step_up_refusal
from bff.proxy.csrf import check_csrf
from bff.proxy.disconnect import DisconnectWatch
from bff.proxy.dpop_retry import DPoPRetry, ProofMaker
from bff.proxy.headers import RESPONSE_DROP, ForwardingPolicy, IncomingHeaders, read_request_headers, response_headers
from bff.proxy.paths import check_path, check_query
from bff.proxy.request_body import ClientGone, RequestBodyReader, replayable_body
from bff.proxy.responses import send_error
from bff.proxy.routes import Route, longest_first, match_route
from bff.telemetry.exchange import NO_OBSERVERS, UNMATCHED, Exchange, Observers
from bff.types import PATH_PREFIX, Receive, Scope, Send
from bff.upstream import RequestBody, UpstreamClient, UpstreamResponse

logger = logging.getLogger(__name__)

ErrorHeaders = Callable[[BffError], list[tuple[bytes, bytes]]]
#: ``bff.error`` of a request whose browser left before its answer was complete (not an answer bff sent).
CLIENT_GONE = "client_disconnected"


class BearerProvider(Protocol):
    """The seam to sessions and tokens (implemented above the proxy's layer, in the app composition)."""

    async def bearer(self, scope: Scope, route: RouteSettings) -> str | None:
        """The access token to send under ``route.token``, or None to forward anonymously.

        Raises ``Unauthenticated``/``SessionExpired``/``ServiceUnavailable``: the proxy answers with the error.
        """
        ...

    async def refresh_bearer(self, scope: Scope, route: RouteSettings, rejected: str) -> str | None:
        """Called once after the upstream answered 401 to ``rejected``: a fresh token, or None (no retry)."""
        ...


def _no_headers(exc: BffError) -> list[tuple[bytes, bytes]]:
    return []


def upstream_error_kind(exc: UpstreamError) -> str:
    """``bff_upstream_errors_total`` ``kind``: a timeout, no connection (refused, reset, TLS), or a broken answer."""
    if isinstance(exc, UpstreamTimeout):
        return "timeout"
    return "connect_error" if isinstance(exc.__cause__, OSError) else "bad_response"


class Proxy:
    """Raw ASGI app for the configured routes (see the module docstring for what each request goes through)."""

    def __init__(
        self,
        routes: Sequence[RouteSettings],
        client: UpstreamClient,
        bearer: BearerProvider,
        *,
        public_origin: str,
        trusted_proxies: Sequence[IPv4Network | IPv6Network],
        error_headers: ErrorHeaders = _no_headers,
        replay_limit: int = 64 * 1024,
        observers: Observers = NO_OBSERVERS,
        dpop: ProofMaker | None = None,
        acr_values_allowed: Collection[str] = (),
    ) -> None:
        # Longest prefix first, so the first match is the most specific route.
        # Headers an observer sets itself (X-Request-Id) are never forwarded as the browser sent them.
        owned = observers.owned_headers
        dpop_default = dpop is not None
        routes_ = (Route(r, client, owned, dpop_default=dpop_default) for r in routes)
        self._routes = longest_first(routes_)
        self._dpop = None if dpop is None else DPoPRetry(dpop)
        self._client = client
        self._bearer = bearer
        self._public_origin = public_origin
        self._forwarding = ForwardingPolicy(public_origin, trusted_proxies)
        self._error_headers = error_headers
        self._replay_limit = replay_limit
        self._outages = outage_log.OutageLog(outage_log.OUTAGE_LOG_INTERVAL)
        self._observers = observers
        self._observing = bool(observers)  # a plain attribute: Observers.__bool__ is a Python call per request
        self._response_drop = RESPONSE_DROP | observers.owned_headers
        self._acr_values_allowed = tuple(acr_values_allowed)

    def match(self, path: str) -> RouteSettings | None:
        """The route for a path: prefix match on segment boundaries, longest prefix wins."""
        route = match_route(self._routes, path.encode("utf-8"))
        return None if route is None else route.settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # pragma: no cover - the app routes only HTTP here
            raise NotImplementedError(f"the proxy does not handle {scope['type']!r} scopes")
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        query: bytes = scope.get("query_string", b"")
        ex: Exchange | None = None
        try:
            check_path(raw_path)
            check_query(query)
            route = match_route(self._routes, raw_path)
            if self._observing:  # after routing, before the session is read (the seam: bff.telemetry.exchange)
                ex = self._observers.exchange(scope, UNMATCHED if route is None else route.label)
            if route is None:
                raise NotFound("no route for this path")
            if scope["method"] not in route.methods:
                refusal = MethodNotAllowed(f"{scope['method']} is not allowed on this route")
                await self._refuse(send, refusal, [(b"allow", route.allow)], ex)
                if ex is not None:
                    self._observers.end(ex)
                return
            incoming = read_request_headers(scope["headers"], route.drop)
            check_csrf(incoming.guard, self._public_origin)
            if incoming.content_length is not None and incoming.content_length > route.max_body:
                raise PayloadTooLarge(f"the request body exceeds {route.max_body} bytes")
            token = await self._bearer.bearer(scope, route.settings)
        except BffError as exc:
            if self._observing and ex is None:  # refused before routing: an invalid path
                ex = self._observers.exchange(scope, UNMATCHED)
            await self._refuse(send, exc, None, ex)
            if ex is not None:
                self._observers.end(ex)
            return

        url = route.base + raw_path[route.strip :].decode("ascii")
        if query:
            url += "?" + query.decode("ascii")
        headers = self._forwarding.upstream_headers(incoming, scope.get("client"), route.extra)
        if ex is not None:
            ex.server_address = route.address
            headers += ex.upstream_headers
        if token is not None:
            if route.dpop:  # last two: a replay replaces them
                assert self._dpop is not None
                headers += self._dpop.headers(scope["method"], url, token)
            else:
                headers.append(("authorization", "Bearer " + token))  # last: a replay replaces it

        watch = DisconnectWatch()
        try:
            await self._forward(scope, receive, send, route, url, headers, incoming, token, watch, ex)
        except asyncio.CancelledError:
            if not watch.fired:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # our own cancellation: the browser left, nothing to answer
        finally:
            watch.stop()
            if ex is not None:
                if watch.fired:  # the browser left before the answer was complete
                    ex.error = CLIENT_GONE
                self._observers.end(ex)

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        route: Route,
        url: str,
        headers: list[tuple[str, str]],
        incoming: IncomingHeaders,
        token: str | None,
        watch: DisconnectWatch,
        ex: Exchange | None,
    ) -> None:
        method: str = scope["method"]
        reader: RequestBodyReader | None = None
        body: RequestBody = None
        if incoming.content_length or incoming.chunked:
            reader = RequestBodyReader(receive, route.max_body, self._replay_limit)
            if incoming.content_length is not None and incoming.content_length <= self._replay_limit:
                try:  # small and of known size: read it whole, which also keeps it for a replay
                    body = await reader.read()
                except ClientGone:
                    if ex is not None:
                        ex.error = CLIENT_GONE
                    return
                except PayloadTooLarge as exc:  # pragma: no cover - the server enforces Content-Length framing
                    await self._refuse(send, exc, None, ex)
                    return
            else:
                body = reader.stream()
        if reader is None or reader.complete:
            watch.start(receive)

        response = await self._send(send, method, url, headers, body, route, reader, ex)
        if response is None:
            if ex is not None and reader is not None:
                ex.bytes_in = reader.received
            return
        try:
            if route.dpop and token is not None:
                assert self._dpop is not None
                if self._dpop.challenged(url, response):
                    # A partial, not a closure: a closure would turn this method's locals into cells on every path.
                    resend = partial(self._send, send, method, url, headers, route=route, reader=None, ex=ex)
                    response, body = await self._dpop.replay(method, url, headers, body, reader, response, resend)
                    if response is None:
                        return
            if token is not None and response.status == 401 and self._wants_refresh(route, response):
                replayable, replay = replayable_body(body, reader)
                if replayable:
                    try:
                        fresh = await self._bearer.refresh_bearer(scope, route.settings, token)
                    except BffError as exc:
                        await self._refuse(send, exc, None, ex)
                        return
                    if fresh is not None:
                        response.release()
                        if route.dpop:
                            assert self._dpop is not None
                            headers[-2:] = self._dpop.headers(method, url, fresh)
                        else:
                            headers[-1] = ("authorization", "Bearer " + fresh)
                        response = await self._send(send, method, url, headers, replay, route, None, ex)
                        if response is None:
                            return
            step_up = None if token is None or response.status != 401 else self._step_up(response, scope)
            if step_up is not None:  # RFC 9470: the SPA is told to log in again
                await self._refuse(send, step_up, None, ex)
                return
            if reader is not None and reader.complete:
                watch.start(receive)
            await self._relay(send, response, route, watch, ex)
        finally:
            if response is not None:
                response.close()  # a no-op after a release; otherwise the connection is not reusable anyway
            if ex is not None and reader is not None:
                ex.bytes_in = reader.received

    def _step_up(self, response: UpstreamResponse, scope: Scope) -> StepUpRequired | None:
        return step_up_refusal(response.headers, self._acr_values_allowed, scope.get(PATH_PREFIX, ""))

    @staticmethod
    def _wants_refresh(route: Route, response: UpstreamResponse) -> bool:
        if route.dpop and dpop_challenge_error(response.headers) == b"invalid_token":
            return True
        if is_invalid_token_challenge(response.headers):
            return True
        return route.settings.refresh_on_401 and not asks_step_up(response.headers)

    async def _send(
        self,
        send: Send,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: RequestBody,
        route: Route,
        reader: RequestBodyReader | None,
        ex: Exchange | None,
    ) -> UpstreamResponse | None:
        """The upstream's answer, or None once the browser has been answered (or has left)."""
        started = 0.0 if ex is None else perf_counter()
        try:
            response = await self._client.send(method, url, headers, body, route.options)
        except UpstreamError as exc:
            if ex is not None:
                ex.upstream_duration = perf_counter() - started
                ex.upstream_time += ex.upstream_duration
                ex.upstream_status = None
            # A failure of our own body stream surfaces as a broken upstream request: report the real cause.
            if reader is not None and reader.too_large:
                await self._refuse(send, PayloadTooLarge(f"the request body exceeds {route.max_body} bytes"), None, ex)
            elif reader is None or not reader.disconnected:
                logger.warning("proxy %s: %s (%s)", route.settings.path, exc.message, type(exc.__cause__).__name__)
                if ex is not None:
                    ex.upstream_error = upstream_error_kind(exc)
                    self._observers.upstream(ex)
                await self._refuse(send, exc, None, ex)
            elif ex is not None:
                ex.error = CLIENT_GONE
            return None
        if ex is not None:
            ex.upstream_duration = perf_counter() - started
            ex.upstream_time += ex.upstream_duration
            ex.upstream_status = response.status
            self._observers.upstream(ex)
        return response

    async def _relay(
        self, send: Send, response: UpstreamResponse, route: Route, watch: DisconnectWatch, ex: Exchange | None
    ) -> None:
        if ex is None:
            headers = response_headers(response.headers)
        else:
            ex.status = response.status
            # An observer's header (X-Request-Id) replaces the upstream's own.
            headers = response_headers(response.headers, self._response_drop)
            headers += ex.response_headers
        start = {"type": "http.response.start", "status": response.status, "headers": headers}
        try:
            await send(start)
            while True:
                chunk = await response.read_chunk()
                if ex is not None:
                    ex.bytes_out += len(chunk)
                if response.at_eof():
                    watch.finished = True
                    await send({"type": "http.response.body", "body": chunk, "more_body": False})
                    response.release()
                    return
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except UpstreamError as exc:
            # The status line is gone: leave the response unfinished so the browser sees a truncated body.
            logger.warning("proxy %s: %s (%s)", route.settings.path, exc.message, type(exc.__cause__).__name__)
            if ex is not None:
                ex.error = exc.error
                ex.upstream_error = upstream_error_kind(exc)
        except OSError:
            if ex is not None:
                ex.error = CLIENT_GONE  # send() failed: the browser is gone; the caller closes the upstream response

    async def _refuse(
        self,
        send: Send,
        exc: BffError,
        extra: list[tuple[bytes, bytes]] | None = None,
        ex: Exchange | None = None,
    ) -> None:
        if isinstance(exc, ServiceUnavailable):
            self._outages.refused(exc)  # an operational refusal: logged per cause, aggregated
        headers = self._error_headers(exc) + (extra or [])
        if ex is not None:
            ex.status = exc.status
            ex.error = exc.error
            headers += ex.response_headers
        await send_error(send, exc, headers)
