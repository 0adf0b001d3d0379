"""``[server]``: where bff listens, the origin the browser sees, and the limits at the browser-facing edge."""

from __future__ import annotations

import ipaddress
import re

from bff.config.reader import Reader, check_url, origin_of, parse_duration, parse_size, table
from bff.config.settings import ServerSettings

#: A DNS host name (RFC 1123 2.1): dot-separated labels of letters, digits and inner hyphens.
_HOST_NAME = re.compile(r"(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")
#: Every IPv4 interface: what an empty host means (Go's net.Listen and oauth2-proxy read ":8000" so).
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - the operator asked for every interface


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port``, ``[ipv6]:port`` or ``:port`` (every IPv4 interface) -> (host, port); ValueError saying what is
    wrong otherwise."""
    text = text.strip()
    host, sep, port = text.rpartition(":")
    if not sep or (not host and not port):
        raise ValueError("expected host:port, [ipv6]:port or :port")
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError("port: expected a number from 1 to 65535")
    if host.startswith("[") or host.endswith("]"):
        if not (host.startswith("[") and host.endswith("]")):
            raise ValueError("write an IPv6 address in brackets, as [::1]:8000")
        inner = host[1:-1]
        try:
            address = ipaddress.IPv6Address(inner)
        except ValueError:
            address = None
        if address is None or address.scope_id:
            raise ValueError("brackets are for IPv6 addresses (without a zone)")
        return inner, int(port)
    if "://" in host:
        raise ValueError("expected host:port without a scheme")
    if ":" in host:
        raise ValueError("write an IPv6 address in brackets, as [::1]:8000")
    if not host:
        return ALL_INTERFACES, int(port)
    if host[0].isdigit() and host.replace(".", "").isdigit():
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError("the host is not an IP address or host name") from None
        return host, int(port)
    if not _HOST_NAME.fullmatch(host):
        raise ValueError("the host is not an IP address or host name")
    return host, int(port)


def describe_listen(host: str, port: int) -> str:
    """What ``bff serve`` binds, for people: ``0.0.0.0:8000 (all IPv4 interfaces)``."""
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if host == ALL_INTERFACES:
        return f"{shown} (all IPv4 interfaces)"
    if host == "::":
        return f"{shown} (all interfaces, IPv6 and, where the system maps them, IPv4)"
    return shown


def _listen(r: Reader) -> tuple[str, int]:
    host, port = r.default("host"), r.default("port")
    listen = r.get("listen", str, f"{host}:{port}")
    try:
        return parse_listen(listen)
    except ValueError as exc:
        r.problem("listen", str(exc))
        return host, port


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
            r.problem(f"trusted_proxies[{i}]", "expected a CIDR like 10.0.0.0/8")
    return tuple(nets)


def _count(r: Reader, name: str, low: int, high: int) -> int:
    value = r.get(name, int)
    if not low <= value <= high:
        r.problem(name, f"must be between {low} and {high}")
        return int(r.default(name))
    return value


def _timeout(r: Reader, name: str, high: float, high_text: str) -> float:
    value = r.converted(name, parse_duration)
    if not 0 < value <= high:
        r.problem(name, f"must be more than 0 and at most {high_text}")
        return float(r.default(name))
    return value


def _drain_delay(r: Reader) -> float:
    value = r.converted("drain_delay", parse_duration)
    if not 0 <= value <= 300:
        r.problem("drain_delay", "must be at least 0 and at most 5m")
        return float(r.default("drain_delay"))
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
    drain_delay = _drain_delay(r)
    shutdown_timeout = _timeout(r, "shutdown_timeout", 3600, "1h")
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
        drain_delay=drain_delay,
        shutdown_timeout=shutdown_timeout,
    )
