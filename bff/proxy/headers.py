"""Header hygiene for proxied requests and answers: what crosses bff in each direction.

Towards the upstream (RFC 9110 7.6.1, RFC 9112 7.6.1 for hop-by-hop fields):

- hop-by-hop fields (``Connection``, ``Keep-Alive``, ``Proxy-Connection``, ``TE``, ``Trailer``,
  ``Transfer-Encoding``, ``Upgrade``) and every field named in ``Connection`` are dropped; so are ``Proxy-*``;
- the browser's credentials never leave bff: ``Cookie`` (all of it: bff's session cookie is not the upstream's
  business) and any client ``Authorization`` (bff sets its own bearer token); ``X-CSRF`` (bff's own guard);
- ``Host`` becomes the upstream's (the client derives it from the URL) and ``Expect`` is answered by the ASGI server;
- every field whose name contains ``_`` is dropped (as nginx does by default, ``underscores_in_headers off``):
  CGI/WSGI servers map ``-`` and ``_`` alike to ``_``, so ``X_Forwarded_For`` would reach their application as the
  ``X-Forwarded-For`` bff controls;
- ``X-Forwarded-*``, ``Forwarded`` and ``X-Real-IP`` from the client are dropped unless the TCP peer is a trusted
  proxy; then they are kept and the peer is appended to the chain. ``X-Forwarded-For``, ``-Proto`` and ``-Host``
  are always set.

Towards the browser: ``Set-Cookie``/``Set-Cookie2`` (the browser would store an upstream's cookie on bff's origin),
hop-by-hop fields, those named in ``Connection`` and the proxy authentication fields (``Proxy-Authenticate``,
``Proxy-Authorization``, ``Proxy-Authentication-Info``: between the upstream and a proxy of its own, RFC 9110 11.7) are
dropped, and so are ``Date`` and ``Server`` (as nginx does
by default, ``proxy_pass_header``): the ASGI server adds its own, and a second ``Date`` would be malformed.
Everything else passes unchanged, including ``WWW-Authenticate``, ``Content-Encoding`` and ``Content-Length``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from bff.errors import BadRequest

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)
REQUEST_DROP = HOP_BY_HOP | {b"cookie", b"authorization", b"x-csrf", b"host", b"expect"}
#: RFC 9110 11.7: the proxy authentication fields concern the next hop only, never the browser.
_PROXY_AUTH = frozenset({b"proxy-authenticate", b"proxy-authorization", b"proxy-authentication-info"})
RESPONSE_DROP = HOP_BY_HOP | _PROXY_AUTH | {b"set-cookie", b"set-cookie2", b"date", b"server"}
#: The request headers the CSRF guard reads (``bff.proxy.csrf``).
GUARD_HEADERS = frozenset({b"x-csrf", b"sec-fetch-site", b"origin"})
_FORWARDING = frozenset({b"forwarded", b"x-real-ip"})

RawHeaders = Sequence[tuple[bytes, bytes]]


@dataclass(slots=True)
class IncomingHeaders:
    """One pass over the browser's request headers."""

    #: What goes to the upstream (before forwarding headers, bearer and route headers are added).
    forward: list[tuple[str, str]]
    #: ``x-csrf``, ``sec-fetch-site`` and ``origin`` as ``bff.proxy.csrf.check_csrf`` wants them.
    guard: dict[str, str]
    content_length: int | None
    chunked: bool
    #: The client's ``X-Forwarded-*``, ``Forwarded`` and ``X-Real-IP``: kept only from a trusted proxy.
    forwarding: list[tuple[bytes, bytes]]


def connection_tokens(value: bytes) -> set[bytes]:
    return {token.strip().lower() for token in value.split(b",")} - {b""}


def read_request_headers(raw: Iterable[tuple[bytes, bytes]], drop: frozenset[bytes]) -> IncomingHeaders:
    """Split ASGI request headers (lower-case names) into what is forwarded and what bff reads itself."""
    forward: list[tuple[str, str]] = []
    guard: dict[str, str] = {}
    forwarding: list[tuple[bytes, bytes]] = []
    content_length: int | None = None
    chunked = False
    named: set[bytes] | None = None
    for name, value in raw:
        if name in GUARD_HEADERS:
            guard[name.decode("latin-1")] = value.decode("latin-1")
        if name in drop:
            if name == b"transfer-encoding":
                chunked = True
            elif name == b"connection":
                named = connection_tokens(value) if named is None else named | connection_tokens(value)
            continue
        if name.startswith(b"proxy-") or b"_" in name:
            continue
        if name.startswith(b"x-forwarded-") or name in _FORWARDING:
            forwarding.append((name, value))
            continue
        if name == b"content-length":
            if not value.isdigit():  # the server's parser normally refuses this first
                raise BadRequest("invalid Content-Length")
            content_length = int(value)
        # Latin-1 both ways (here and in ``bff.upstream``): every octet of a value reaches the upstream as the
        # browser sent it (RFC 9110 5.5: field values are octets, not UTF-8).
        forward.append((name.decode("latin-1"), value.decode("latin-1")))
    if named:
        forward = [(n, v) for n, v in forward if n.encode("latin-1") not in named]
        forwarding = [(n, v) for n, v in forwarding if n not in named]
    return IncomingHeaders(forward, guard, content_length, chunked, forwarding)


def request_drop_set(remove_headers: Iterable[str], set_headers: Mapping[str, str]) -> frozenset[bytes]:
    """The request headers never forwarded on one route: bff's own list plus the route's removed and set ones."""
    return REQUEST_DROP | {h.lower().encode("latin-1") for h in [*remove_headers, *set_headers]}


class ForwardingPolicy:
    """Builds ``X-Forwarded-*`` for each request; trusts the client's own only from a trusted proxy."""

    def __init__(
        self, public_origin: str, trusted_proxies: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
    ) -> None:
        origin = urlsplit(public_origin)
        self._proto = origin.scheme
        self._host = origin.netloc
        self._trusted = tuple(trusted_proxies)
        self._verdicts: dict[str, bool] = {}

    def is_trusted(self, peer: str) -> bool:
        verdict = self._verdicts.get(peer)
        if verdict is None:
            try:
                address = ipaddress.ip_address(peer)
            except ValueError:
                verdict = False
            else:
                verdict = any(address in network for network in self._trusted)
            if len(self._verdicts) > 4096:  # bounded: peers are few (load balancers) or untrusted anyway
                self._verdicts.clear()
            self._verdicts[peer] = verdict
        return verdict

    def upstream_headers(
        self, incoming: IncomingHeaders, client: tuple[str, int] | None, extra: list[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        """What goes upstream before the bearer token: the browser's fields after hygiene (``incoming.forward``,
        extended in place), ``X-Forwarded-*`` for the TCP peer ``client`` (the ASGI scope's) and the route's
        ``extra`` (``set_headers``). One method without helper calls: it runs on every proxied request."""
        out = incoming.forward
        peer = client[0] if client else None
        if peer is None:  # a Unix socket: no address to report, nothing to trust
            out += [("x-forwarded-proto", self._proto), ("x-forwarded-host", self._host)]
        elif not (self._trusted and self.is_trusted(peer)):
            out += [("x-forwarded-for", peer), ("x-forwarded-proto", self._proto), ("x-forwarded-host", self._host)]
        else:
            chain: list[str] = []
            proto, host = self._proto, self._host
            for name, raw_value in incoming.forwarding:
                value = raw_value.decode("latin-1")
                if name == b"x-forwarded-for":
                    chain.append(value)
                elif name == b"x-forwarded-proto":
                    proto = value
                elif name == b"x-forwarded-host":
                    host = value
                elif name == b"forwarded":
                    chain_value = f'for="[{peer}]"' if ":" in peer else f"for={peer}"  # RFC 7239 6: quote IPv6
                    out.append(("forwarded", f"{value}, {chain_value}"))
                else:
                    out.append((name.decode("latin-1"), value))
            chain.append(peer)
            out += [("x-forwarded-for", ", ".join(chain)), ("x-forwarded-proto", proto), ("x-forwarded-host", host)]
        out += extra
        return out


def response_headers(raw: RawHeaders, drop: frozenset[bytes] = RESPONSE_DROP) -> list[tuple[bytes, bytes]]:
    """The upstream's header lines that reach the browser, names lower-cased as ASGI asks (``drop``: a superset of
    ``RESPONSE_DROP`` when bff sets a header of its own, such as ``X-Request-Id``)."""
    out: list[tuple[bytes, bytes]] = []
    named: set[bytes] | None = None
    for name, value in raw:
        lname = name.lower()
        if lname in drop:
            if lname == b"connection":
                named = connection_tokens(value) if named is None else named | connection_tokens(value)
            continue
        out.append((lname, value))
    if named:
        out = [(n, v) for n, v in out if n not in named]
    return out


def header_value(raw: RawHeaders, wanted: bytes) -> bytes | None:
    """The first value of the (lowercase) field ``wanted``."""
    for name, value in raw:
        if name.lower() == wanted:
            return value
    return None
