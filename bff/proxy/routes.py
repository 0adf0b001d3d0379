"""A configured route with everything precomputed that does not depend on the request.

Routes match on segment boundaries (``/api`` matches ``/api`` and ``/api/x``, never ``/apix``); the proxy keeps them
longest prefix first, so the first match is the most specific.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from bff.config import HTTP_METHODS, RouteSettings, normalize_prefix
from bff.proxy.headers import request_drop_set
from bff.upstream import UpstreamClient


def client_cert_of(settings: RouteSettings) -> tuple[str, str, str | None] | None:
    if not settings.client_cert or not settings.client_key:
        return None
    password = settings.client_key_password
    return settings.client_cert, settings.client_key, password.reveal() if password is not None else None


class Route:
    """A route with everything precomputed that does not depend on the request."""

    __slots__ = (
        "address",
        "allow",
        "base",
        "dpop",
        "drop",
        "extra",
        "label",
        "max_body",
        "methods",
        "options",
        "prefix",
        "settings",
        "strip",
    )

    def __init__(
        self,
        settings: RouteSettings,
        client: UpstreamClient,
        also_drop: frozenset[bytes] = frozenset(),
        *,
        dpop_default: bool = False,
    ) -> None:
        self.settings = settings
        #: Send ``Authorization: DPoP`` and a proof (RFC 9449 7.1): with bff's key (``dpop_default``), unless the
        #: route says ``dpop = false``; never without the key (config refuses ``dpop = true`` without it).
        self.dpop = dpop_default and settings.dpop is not False
        prefix = normalize_prefix(settings.path)
        self.prefix = b"" if prefix == "/" else prefix.encode("ascii")
        self.strip = len(self.prefix) if settings.strip_prefix else 0
        self.base = settings.upstream.rstrip("/")
        #: The route as telemetry names it (``http_route``, ``bff_route``) and its upstream's ``host:port``.
        self.label = prefix
        upstream = urlsplit(self.base)
        default_port = 443 if upstream.scheme == "https" else 80
        self.address = f"{upstream.hostname}:{upstream.port or default_port}"
        # "All methods" means the ones config accepts: never TRACE, which would echo the request, bearer token
        # included, back to the caller (OWASP "Cross-Site Tracing"), nor CONNECT or extension methods.
        methods = tuple(m.upper() for m in settings.methods) or HTTP_METHODS
        self.methods = frozenset(methods)
        self.allow = ", ".join(methods).encode("ascii")
        self.max_body = settings.max_body
        self.drop = request_drop_set(settings.remove_headers, settings.set_headers) | also_drop
        if self.dpop:  # the browser's own DPoP header would stand beside bff's proof
            self.drop = self.drop | {b"dpop"}
        self.extra = [(name.lower(), value) for name, value in settings.set_headers.items()]
        self.options = client.options(
            connect_timeout=settings.connect_timeout,
            timeout=settings.timeout,
            ca_bundle=settings.ca_bundle,
            upstream=settings.upstream,
            proxy=settings.proxy,
            client_cert=client_cert_of(settings),
        )

    def matches(self, raw_path: bytes) -> bool:
        n = len(self.prefix)
        return raw_path.startswith(self.prefix) and (len(raw_path) == n or raw_path[n] == 0x2F)  # "/"


def longest_first(routes: Iterable[Route]) -> list[Route]:
    """The routes longest prefix first, so the first match is the most specific."""
    return sorted(routes, key=lambda r: len(r.prefix), reverse=True)


def match_route(routes: Sequence[Route], raw_path: bytes) -> Route | None:
    """The first of ``routes`` (:func:`longest_first`) that matches ``raw_path``."""
    for route in routes:
        if route.matches(raw_path):
            return route
    return None
