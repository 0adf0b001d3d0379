"""The data-plane HTTP client: HTTP/1.1 over asyncio transports, answers parsed by httptools (llhttp).

Every proxied request pays for this client, so it does only what a reverse proxy needs: a protocol on the event
loop's transports (``connection``), no cookie jar, no redirects, no URL or header objects. It is a pass-through:
bytes and ``Content-Encoding`` arrive untouched, no cookies are kept (an upstream's ``Set-Cookie`` must never become
state shared between users), redirects are never followed (a 3xx is the SPA's business), no header is invented but
``Host`` and the body framing, TLS verification stays on (a route's private CA becomes a cached ``SSLContext``).

Failures are translated where they enter, in the manner of httpx's ``map_httpcore_exceptions``, always
``raise ... from exc`` with fixed messages (no URL, query string, header or token ever reaches one):

- connect refused/reset, a broken, garbled or oversized answer                -> ``UpstreamError`` (502)
- a TLS handshake that failed, a TLS alert (a refused client certificate)     -> ``UpstreamTLSError`` (502)
- connect or read timeout (the route's ``connect_timeout``/``timeout``)       -> ``UpstreamTimeout`` (504)

A request is sent again at most once, always on a new connection (a pooled sibling may be just as stale), and only
when the upstream cannot have acted on it: a reused connection failed before any byte of the answer arrived, and
either the kernel refused the very first write (the peer had reset the connection: nothing of the request left) or
the method is idempotent (RFC 9110 9.2.2) with a body that can be sent again. A timeout is never a reason to resend:
the upstream may be working on the request.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from bff.errors import UpstreamError, UpstreamProxyError, UpstreamProxyRefused, UpstreamTimeout, UpstreamTLSError
from bff.upstream.connection import Connection
from bff.upstream.pool import ConnectionPool
from bff.upstream.proxy import ForwardProxy, Tunnel, connect_head, parse_proxy_url, proxy_from_environment
from bff.upstream.request_body import write_body
from bff.upstream.request_head import Origin, RequestBody, request_head, split_url
from bff.upstream.response import UpstreamResponse

_P = TypeVar("_P", bound=asyncio.BaseProtocol)
#: A client certificate file, its key file and the key's passphrase (or None).
ClientCert = tuple[str, str, str | None]

#: RFC 9110 9.2.2: a request with one of these methods may be sent again after a connection failure.
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


@dataclass(frozen=True, slots=True)
class TransportOptions:
    """Per-route transport settings, built once per route with :meth:`UpstreamClient.options`."""

    connect_timeout: float
    #: Bounds each wait for the upstream: for the answer's headers, then for every later read of its body; restarted
    #: by every chunk of a streamed request body while one is being sent.
    read_timeout: float
    #: ``True``: the default context (system CAs, hostname checked); else a route's own context.
    ssl: ssl.SSLContext | bool
    #: The forward proxy the route's upstream is reached through, or None: direct.
    proxy: ForwardProxy | None = None


class UpstreamClient(ConnectionPool):
    """One keep-alive connection pool for all routes. Create once per process; ``await aclose()`` at shutdown."""

    def __init__(self, *, keepalive_timeout: float = 30.0, read_bufsize: int = 2**16) -> None:
        # No cap on connections: concurrency is bounded by the server's connection limit, and a cap here would let
        # a few long SSE streams starve every other route (waiting for a slot counts as connect time).
        super().__init__(keepalive_timeout)
        self._read_bufsize = read_bufsize
        self._ssl_contexts: dict[tuple[str | None, str | None, str | None], ssl.SSLContext] = {}
        self._default_ssl: ssl.SSLContext | None = None

    def options(
        self,
        *,
        connect_timeout: float,
        timeout: float,
        ca_bundle: str | None = None,
        upstream: str | None = None,
        proxy: str | None = None,
        environ: Mapping[str, str] | None = None,
        client_cert: ClientCert | None = None,
    ) -> TransportOptions:
        """Transport settings for one route. ``timeout`` bounds each wait for the upstream (the answer's headers and
        every later read), not the whole exchange, so a long download or an SSE stream that keeps talking lives on.

        ``proxy``: the route's forward proxy URL, ``""`` for none; None: the environment's choice for ``upstream``
        (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``: see ``bff.upstream.proxy``). Decided here, once per route.

        ``client_cert``: the certificate, key and key passphrase bff presents to the upstream (mutual TLS). A route's
        context carries its certificate and the pool is keyed by the context, so a connection made with one client
        certificate is never reused for a route with another (or none)."""
        context: ssl.SSLContext | bool = True
        if ca_bundle or client_cert:
            cert, key, password = client_cert or (None, None, None)
            cache = (ca_bundle or None, cert, key)
            if cache not in self._ssl_contexts:  # one context per bundle and certificate, shared by their routes
                made = ssl.create_default_context(cafile=ca_bundle or None)
                if cert is not None:
                    made.load_cert_chain(cert, key, password)
                self._ssl_contexts[cache] = made
            context = self._ssl_contexts[cache]
        forward: ForwardProxy | None = None
        if proxy:
            forward = parse_proxy_url(proxy)
        elif proxy is None and upstream is not None:
            forward = proxy_from_environment(upstream, os.environ if environ is None else environ)
        return TransportOptions(connect_timeout=connect_timeout, read_timeout=timeout, ssl=context, proxy=forward)

    def _context(self, options: TransportOptions) -> ssl.SSLContext:
        if isinstance(options.ssl, ssl.SSLContext):
            return options.ssl
        if self._default_ssl is None:
            self._default_ssl = ssl.create_default_context()  # system CAs, hostname checked
        return self._default_ssl

    async def send(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: RequestBody,
        options: TransportOptions,
    ) -> UpstreamResponse:
        """Send one request and return as soon as the answer's headers have arrived; the body streams later.

        ``url`` must already be percent-encoded: it is sent byte for byte. ``body`` is bytes, an async iterable
        (sent chunked unless ``headers`` carries a Content-Length) or None.
        """
        proxy = options.proxy
        try:
            origin, target = split_url(url)
            if proxy is None:
                head, length = request_head(method, target, origin.authority, headers, body)
            else:
                head, length = _proxied_head(method, origin, target, headers, body, proxy)
        except (ValueError, UnicodeEncodeError) as exc:
            raise UpstreamError("the request cannot be sent upstream: a header or the target is malformed") from exc
        context = self._context(options) if origin.https else None
        key: tuple[object, ...] = (origin.host, origin.port, id(context) if context is not None else None)
        if proxy is not None:
            key = (*key, proxy)  # never shared with direct connections or another proxy's
        connection = self._idle_connection(key)
        resent = False
        while True:
            if connection is None:
                if proxy is None:
                    connection = await self._connect(origin, context, options)
                else:
                    connection = await self._connect_through(proxy, origin, context, options)
            try:
                self._start(connection, method, head, body, length, options)
                await connection.wait_headers()
            except UpstreamError as exc:
                connection.close()
                if not resent and _may_resend(exc, connection, method, body):
                    resent = True
                    connection = None  # a new connection: a pooled sibling may be just as stale
                    continue
                raise
            except BaseException:
                connection.close()
                raise
            if proxy is not None and connection.status == 407 and not origin.https:
                # RFC 9110 15.5.8: 407 is the proxy's own answer (its credentials), never the upstream's to relay.
                connection.close()
                raise UpstreamProxyRefused("the proxy refused the request to the upstream (407)")
            return UpstreamResponse(connection, self, key)

    def _start(
        self,
        connection: Connection,
        method: str,
        head: bytes,
        body: RequestBody,
        length: int | None,
        options: TransportOptions,
    ) -> None:
        transport = connection.transport
        if connection.closed or transport is None or transport.is_closing():
            connection.unsent = True
            error = UpstreamError("the upstream could not be reached or broke the connection")
            error.__cause__ = ConnectionResetError("the connection closed while idle")
            raise error
        connection.start(method == "HEAD", options.read_timeout)
        small = isinstance(body, bytes) and len(body) <= 16384
        transport.write(head + body if small and isinstance(body, bytes) else head)
        if transport.is_closing():
            # The first write failed at once (the peer had reset the connection): no byte of the request left.
            connection.unsent = True
            error = UpstreamError("the upstream could not be reached or broke the connection")
            error.__cause__ = ConnectionResetError("the upstream reset the connection before the request")
            raise error
        if isinstance(body, bytes):
            if not small:
                transport.write(body)
        else:
            if body is not None:
                connection.writer = asyncio.get_running_loop().create_task(write_body(connection, body, length))

    async def _connect(self, origin: Origin, context: ssl.SSLContext | None, options: TransportOptions) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(options.connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: Connection(loop, self._read_bufsize),
                    origin.host,
                    origin.port,
                    ssl=context,
                    server_hostname=origin.host if context is not None else None,
                )
        except TimeoutError as exc:
            raise UpstreamTimeout("connecting to the upstream timed out") from exc
        except ssl.SSLError as exc:  # its certificate untrusted, or (TLS 1.2) ours refused
            raise UpstreamTLSError("the TLS handshake with the upstream failed") from exc
        except OSError as exc:
            raise UpstreamError("the upstream could not be reached or broke the connection") from exc
        return connection

    async def _connect_through(
        self, proxy: ForwardProxy, origin: Origin, context: ssl.SSLContext | None, options: TransportOptions
    ) -> Connection:
        """A connection to the proxy: used as is for an http upstream, or tunnelled with CONNECT and TLS for https."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(options.connect_timeout):
                if context is None:
                    _, connection = await self._open_to_proxy(loop, proxy, lambda: Connection(loop, self._read_bufsize))
                    return connection
                transport, tunnel = await self._open_to_proxy(loop, proxy, lambda: Tunnel(loop))
                try:
                    transport.write(connect_head(origin, proxy))
                    await tunnel.established
                    connection = Connection(loop, self._read_bufsize)
                    tls = await loop.start_tls(transport, connection, context, server_hostname=origin.host)
                except BaseException:
                    transport.close()
                    raise
        except TimeoutError as exc:
            raise UpstreamTimeout("connecting to the upstream through the proxy timed out") from exc
        except (OSError, ssl.SSLError, ssl.CertificateError) as exc:
            raise UpstreamError("the upstream could not be reached through the proxy or broke the connection") from exc
        if tls is None:  # pragma: no cover - start_tls returns None only for a transport closed meanwhile
            raise UpstreamProxyError("the proxy closed the tunnel")
        connection.connection_made(tls)  # start_tls does not announce the new transport to its protocol
        return connection

    @staticmethod
    async def _open_to_proxy(
        loop: asyncio.AbstractEventLoop, proxy: ForwardProxy, factory: Callable[[], _P]
    ) -> tuple[asyncio.Transport, _P]:
        try:
            transport, protocol = await loop.create_connection(factory, proxy.host, proxy.port)
        except OSError as exc:
            raise UpstreamProxyError("the proxy could not be reached") from exc
        return transport, protocol


def _proxied_head(
    method: str,
    origin: Origin,
    target: str,
    headers: Sequence[tuple[str, str]],
    body: RequestBody,
    proxy: ForwardProxy,
) -> tuple[bytes, int | None]:
    """The request head for a request through ``proxy``: in a CONNECT tunnel the upstream's own (origin-form, no
    proxy field); to the proxy itself absolute-form (RFC 9112 3.2.2) with the proxy's credentials."""
    own = [(name, value) for name, value in headers if not name.lower().startswith("proxy-")]
    if origin.https:
        return request_head(method, target, origin.authority, own, body)
    if proxy.authorization is not None:
        own.append(("proxy-authorization", proxy.authorization))
    return request_head(method, f"http://{origin.authority}{target}", origin.authority, own, body)


def _may_resend(error: UpstreamError, connection: Connection, method: str, body: RequestBody) -> bool:
    """Whether a failed request may go out once more: only if the upstream cannot have acted on it."""
    if isinstance(error, UpstreamTimeout) or not connection.reused:
        return False  # a timeout: the upstream may still be working on it
    if connection.unsent:
        return True  # not one byte left (a streamed body was not read either)
    if connection.received_any:
        return False  # answered in part: the upstream has acted
    # The upstream closed as the request left (its keep-alive timeout): safe only to repeat (RFC 9110 9.2.2).
    return method in _IDEMPOTENT and (body is None or isinstance(body, bytes))
