"""Forward proxies for upstream calls: which one a route uses, and the tunnel through it.

A route's proxy is decided once, when the route is built: its ``proxy`` key (``""``: always direct), or else the
environment with the rules httpx applies to the IdP calls, so both planes leave through the same egress:

* ``HTTPS_PROXY`` for https upstreams, ``HTTP_PROXY`` for http ones, ``ALL_PROXY`` for both (lower-case names win;
  ``HTTP_PROXY`` is ignored under CGI, where a client can set it with a ``Proxy:`` header: httpoxy);
* ``NO_PROXY``: comma-separated; ``*`` disables every proxy; ``example.com`` matches it and its subdomains,
  ``.example.com`` only subdomains; IP literals (an IPv6 one without brackets) and ``localhost`` match exactly;
  ``host:port`` only that port; ``scheme://host`` only that scheme. Ranges (CIDR) are not understood (httpx
  neither): ``10.0.0.0/8`` matches the address ``10.0.0.0`` only.

Only ``http://`` proxies are supported. An http upstream is asked for in absolute form (RFC 9112 3.2.2) on a
connection to the proxy; an https upstream through a ``CONNECT`` tunnel (RFC 9110 9.3.6) inside which TLS is spoken
with the upstream itself, its hostname for SNI and verification. Credentials in the proxy URL become
``Proxy-Authorization: Basic`` (RFC 9110 11.7.1, RFC 7617), sent to the proxy only, never shown.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from bff.errors import ConfigError, UpstreamError, UpstreamProxyError, UpstreamProxyRefused
from bff.upstream.request_head import Origin

#: The proxy's answer to CONNECT (status line and fields) may not be longer than this.
MAX_CONNECT_ANSWER = 16 * 1024
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([0-9]{3})(?: [^\r\n]*)?\r\n")


@dataclass(frozen=True, slots=True)
class ForwardProxy:
    """An ``http://`` forward proxy; ``authorization`` is the ``Proxy-Authorization`` value, or None."""

    host: str
    port: int
    authorization: str | None = field(default=None, repr=False)


def parse_proxy_url(url: str) -> ForwardProxy:
    """A proxy URL (``http://[user:password@]host[:port]``; no scheme means http) -> its proxy. The ValueError's
    message never quotes the URL: it may hold a password."""
    if "://" not in url:
        url = "http://" + url
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError("is not a valid proxy URL (host and port?)") from exc
    if parts.scheme.lower() != "http":
        raise ValueError("must be an http:// proxy URL (https:// and socks proxies are not supported)")
    if not parts.hostname:
        raise ValueError("must name the proxy's host (http://proxy:3128)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must be the proxy's origin only (http://[user:password@]host:port), no path or query")
    authorization = None
    if parts.username is not None or parts.password is not None:
        user, password = unquote(parts.username or ""), unquote(parts.password or "")
        authorization = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return ForwardProxy(parts.hostname, port or 80, authorization)


def environment_proxies(environ: Mapping[str, str]) -> dict[str, str]:
    """``*_proxy`` variables by scheme (``https``, ``http``, ``all``, ``no``), as ``urllib.request`` reads them."""
    proxies: dict[str, str] = {}
    for name, value in environ.items():
        if value and name.lower().endswith("_proxy"):
            proxies[name.lower()[:-6]] = value
    if "REQUEST_METHOD" in environ:
        proxies.pop("http", None)  # httpoxy: under CGI, HTTP_PROXY may come from the client's Proxy header
    for name, value in environ.items():
        if name.endswith("_proxy"):  # the lower-case spelling wins
            if value:
                proxies[name[:-6]] = value
            else:
                proxies.pop(name[:-6], None)
    return proxies


@dataclass(frozen=True)
class _Pattern:
    scheme: str  # "" for any
    host: str  # "" for any; "*x" x and its subdomains; "*.x" subdomains only
    port: int | None

    def matches(self, scheme: str, host: str, port: int | None) -> bool:
        if self.scheme and self.scheme != scheme:
            return False
        if self.host:
            if self.host.startswith("*."):
                if not re.fullmatch(r".+\." + re.escape(self.host[2:]), host):
                    return False
            elif self.host.startswith("*"):
                if not re.fullmatch(r"(.+\.)?" + re.escape(self.host[1:]), host):
                    return False
            elif self.host != host:
                return False
        return self.port is None or self.port == port

    @property
    def priority(self) -> tuple[int, int, int]:
        """Most specific first: with a port, then the longer host, then the longer scheme."""
        return (0 if self.port is not None else 1, -len(self.host), -len(self.scheme))


def _pattern(text: str) -> _Pattern | None:
    scheme, _, rest = text.partition("://")
    authority = rest.split("/", 1)[0]
    if authority.startswith("["):
        host, _, tail = authority[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port_text = authority.partition(":")
    if port_text and not port_text.isdigit():
        return None
    return _Pattern("" if scheme == "all" else scheme.lower(), host.lower(), int(port_text) if port_text else None)


def _no_proxy_pattern(entry: str) -> _Pattern | None:
    if "://" in entry:
        return _pattern(entry)
    address = entry.split("/")[0]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        ip = None
    if ip is not None:
        return _Pattern("", address.lower() if ip.version == 6 else address, None)
    if entry.lower() == "localhost":
        return _pattern(f"all://{entry}")
    return _pattern(f"all://*{entry}")


def proxy_from_environment(upstream: str, environ: Mapping[str, str]) -> ForwardProxy | None:
    """The proxy the environment picks for ``upstream``, or None for a direct connection.

    Raises ConfigError for a proxy URL bff cannot use (naming the variable, never its value)."""
    proxies = environment_proxies(environ)
    mounts: list[tuple[_Pattern, str | None]] = []
    for scheme in ("http", "https", "all"):
        if proxies.get(scheme):
            mounts.append((_Pattern("" if scheme == "all" else scheme, "", None), proxies[scheme]))
    for entry in (e.strip() for e in proxies.get("no", "").split(",")):
        if entry == "*":
            return None
        pattern = _no_proxy_pattern(entry) if entry else None
        if pattern is not None:
            mounts.append((pattern, None))
    mounts.sort(key=lambda mount: mount[0].priority)  # stable: equal priorities keep their order, as in httpx
    parts = urlsplit(upstream)
    scheme = parts.scheme.lower()
    port = parts.port if parts.port != {"http": 80, "https": 443}.get(scheme) else None
    host = (parts.hostname or "").lower()
    for pattern, proxy_url in mounts:
        if pattern.matches(scheme, host, port):
            if proxy_url is None:
                return None
            try:
                return parse_proxy_url(proxy_url)
            except ValueError as exc:
                name = {"http": "HTTP_PROXY", "https": "HTTPS_PROXY"}.get(pattern.scheme, "ALL_PROXY")
                raise ConfigError([f"{name} (environment, used for {scheme} upstreams): {exc}"]) from exc
    return None


def connect_head(origin: Origin, proxy: ForwardProxy) -> bytes:
    """The CONNECT request for a tunnel to ``origin`` (RFC 9110 9.3.6: the target is host:port, authority-form)."""
    host = f"[{origin.host}]" if ":" in origin.host else origin.host
    lines = [f"CONNECT {host}:{origin.port} HTTP/1.1\r\nhost: {host}:{origin.port}\r\n"]
    if proxy.authorization is not None:
        lines.append(f"proxy-authorization: {proxy.authorization}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


class Tunnel(asyncio.Protocol):
    """Reads the proxy's answer to CONNECT; ``established`` resolves once a 2xx head arrived and nothing after it.

    Reading pauses at the end of the head: the next bytes belong to the TLS handshake that ``loop.start_tls`` runs."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.established: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports do not inherit asyncio's

    def _fail(self, error: UpstreamError) -> None:
        if not self.established.done():
            self.established.set_exception(error)
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.established.done():
            self._fail(UpstreamProxyError("the proxy sent bytes after its answer to CONNECT"))
            return
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_CONNECT_ANSWER:
                self._fail(UpstreamProxyError("the proxy's answer to CONNECT is too large"))
            return
        if self.transport is not None:
            self.transport.pause_reading()
        status = _STATUS_LINE.match(self._buffer)
        if end + 4 > MAX_CONNECT_ANSWER or status is None:
            self._fail(UpstreamProxyError("the proxy answered CONNECT with something that is not HTTP/1.1"))
        elif not 200 <= int(status.group(1)) < 300:
            # 407: credentials missing or refused; 403: the proxy's policy; 502/504: it could not reach the upstream.
            self._fail(UpstreamProxyRefused(f"the proxy refused the tunnel to the upstream ({int(status.group(1))})"))
        elif end + 4 < len(self._buffer):
            # The upstream speaks only after our TLS ClientHello: earlier bytes are the proxy's, and not a tunnel.
            self._fail(UpstreamProxyError("the proxy sent bytes after its answer to CONNECT"))
        else:
            self.established.set_result(None)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.established.done():
            error = UpstreamProxyError("the proxy closed the connection before the tunnel was open")
            error.__cause__ = exc
            self.established.set_exception(error)
