"""``[server]``: where bff listens, the origin the browser sees, and the limits at the browser-facing edge."""

from __future__ import annotations

import ipaddress

from bff.config.reader import Reader, check_url, origin_of, parse_duration, parse_size, table
from bff.config.settings import ServerSettings


def _listen(r: Reader) -> tuple[str, int]:
    host, port = r.default("host"), r.default("port")
    listen = r.get("listen", str, f"{host}:{port}")
    h, sep, p = listen.rpartition(":")
    if not sep or not p.isdigit() or not (0 < int(p) < 65536):
        r.problem("listen", f"expected host:port, got {listen!r}")
        return host, port
    return h.strip("[]") or "127.0.0.1", int(p)


def _public_origin(r: Reader) -> str:
    public_origin = r.get("public_origin", str, "", required=True)
    if public_origin and check_url(r, "public_origin", public_origin, path_ok=False):
        return origin_of(public_origin)
    return public_origin


def _trusted_proxies(r: Reader) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for i, cidr in enumerate(r.string_list("trusted_proxies")):
        try:
            nets.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            r.problem(f"trusted_proxies[{i}]", f"expected a CIDR like 10.0.0.0/8, got {cidr!r}")
    return tuple(nets)


def _count(r: Reader, name: str, low: int, high: int) -> int:
    value = r.get(name, int)
    if not low <= value <= high:
        r.problem(name, f"must be between {low} and {high}, got {value}")
        return int(r.default(name))
    return value


def _timeout(r: Reader, name: str, high: float, high_text: str) -> float:
    value = r.converted(name, parse_duration)
    if not 0 < value <= high:
        r.problem(name, f"must be more than 0 and at most {high_text}")
        return float(r.default(name))
    return value


def _head_size(r: Reader) -> int:
    value = r.converted("max_request_header_size", parse_size)
    if not 1024 <= value <= 1024 * 1024:
        r.problem("max_request_header_size", "must be between 1KiB and 1MiB (request heads are held in memory)")
        return int(r.default("max_request_header_size"))
    return value


def read_server(root: Reader) -> ServerSettings:
    r = table(root, "server", ServerSettings)
    host, port = _listen(r)
    public_origin = _public_origin(r)
    trusted_proxies = _trusted_proxies(r)
    max_connections = _count(r, "max_connections", 1, 1_000_000)
    header_timeout = _timeout(r, "header_timeout", 300, "5m")
    keep_alive_timeout = _timeout(r, "keep_alive_timeout", 3600, "1h")
    body_timeout = _timeout(r, "body_timeout", 3600, "1h")
    max_request_header_size = _head_size(r)
    max_request_headers = _count(r, "max_request_headers", 1, 10_000)
    r.finish()
    return ServerSettings(
        host=host,
        port=port,
        public_origin=public_origin,
        trusted_proxies=trusted_proxies,
        max_connections=max_connections,
        header_timeout=header_timeout,
        keep_alive_timeout=keep_alive_timeout,
        body_timeout=body_timeout,
        max_request_header_size=max_request_header_size,
        max_request_headers=max_request_headers,
    )
