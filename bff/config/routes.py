"""``[[routes]]``: path prefixes, their upstreams, and how each route gets its token."""

from __future__ import annotations

import contextlib
from urllib.parse import urlsplit

from bff.config.client_tls import read_client_cert
from bff.config.exchange import read_exchange
from bff.config.reader import HEADER_NAME, Reader, check_url, existing_file, parse_duration, parse_size, tables
from bff.config.settings import RouteSettings
from bff.config.values import HTTP_METHODS, RESERVED_PREFIXES, TOKEN_POLICIES, TokenPolicy
from bff.config.websocket_routes import read_websocket_keys

#: Headers bff itself manages on a proxied request: a route may neither set nor remove them.
MANAGED_HEADERS = ("authorization", "cookie", "host", "content-length", "transfer-encoding", "dpop")


def normalize_prefix(path: str) -> str:
    """``/api//orders/`` -> ``/api/orders``: the one spelling routes are matched by (segment boundaries)."""
    return "/" + "/".join(seg for seg in path.split("/") if seg)


def is_plain_path(path: str) -> bool:
    """An absolute path without dot segments, query, fragment, escapes, parameters, wildcards, spaces or control
    characters: what matches the raw request path byte for byte (RFC 3986 3.3)."""
    return (
        path.startswith("/")
        and not any(seg in (".", "..") for seg in path.split("/"))
        and not any(c in path for c in "?#%\\;@*")
        and not any(ord(c) < 0x21 or ord(c) == 0x7F for c in path)
    )


def _path(r: Reader, index: int, prefixes: dict[str, int]) -> str:
    path = r.get("path", str, "", required=True)
    if not path:
        return path
    if not is_plain_path(path):
        r.problem("path", "must be a plain absolute path prefix like /api/orders")
        return path
    path = normalize_prefix(path)
    if path == "/":
        r.problem("path", "must not be '/': it would shadow the SPA and bff's own endpoints")
    elif any(path == p or path.startswith(p + "/") for p in RESERVED_PREFIXES):
        r.problem("path", f"overlaps bff's own endpoints ({', '.join(RESERVED_PREFIXES)})")
    elif path in prefixes:
        r.problem("path", f"duplicates routes[{prefixes[path]}].path")
    else:
        prefixes[path] = index
    return path


def _upstream(r: Reader) -> str:
    upstream = r.get("upstream", str, "", required=True)
    if upstream and check_url(r, "upstream", upstream) and urlsplit(upstream).query:
        r.problem("upstream", "must not contain a query string")
    return upstream.rstrip("/")


def _methods(r: Reader) -> tuple[str, ...]:
    methods = tuple(m.upper() for m in r.string_list("methods"))
    for i, m in enumerate(methods):
        if m not in HTTP_METHODS:
            r.problem(f"methods[{i}]", f"expected one of {', '.join(HTTP_METHODS)}")
    return methods


def _header_rules(r: Reader) -> tuple[dict[str, str], tuple[str, ...]]:
    set_headers = r.string_map("set_headers")
    remove_headers = r.string_list("remove_headers")
    for name in [*set_headers, *remove_headers]:
        if not HEADER_NAME.match(name):
            r.problem("set_headers", "a header name is not a valid field name (RFC 9110 5.1)")
        elif name.lower() in MANAGED_HEADERS:
            r.problem("set_headers", f"{name} is managed by bff and may not be set or removed per route")
    return set_headers, tuple(h.lower() for h in remove_headers)


def _proxy(r: Reader) -> str | None:
    """The route's forward proxy URL, ``""`` for none, None for the environment's choice."""
    if "proxy" not in r.data:
        r.seen.add("proxy")
        return None
    proxy = r.get("proxy", str, "")
    if not proxy:
        return proxy
    parts = None
    with contextlib.suppress(ValueError):
        split = urlsplit(proxy)
        split.port  # noqa: B018 - raises ValueError for a port out of range or not a number
        parts = split
    # Never quoted: a proxy URL may carry a password.
    if parts is None or parts.scheme != "http" or not parts.hostname:
        r.problem(
            "proxy", "expected an http:// proxy URL like http://proxy:3128 (https:// and socks are not supported)"
        )
    elif parts.path not in ("", "/") or parts.query or parts.fragment:
        r.problem("proxy", "must be the proxy's origin only (http://[user:password@]host:port), no path or query")
    return proxy


def _resource(r: Reader) -> str | None:
    resource = r.optional("resource")
    if resource:
        check_url(r, "resource", resource)
    return resource


def _anonymous(r: Reader, token: TokenPolicy) -> bool:
    anonymous = r.get("anonymous", bool)
    if "anonymous" in r.data and token != "client":
        r.problem(
            "anonymous",
            "applies only to token = 'client' (routes with token 'none' or 'user_or_none' always serve callers"
            " without a session, 'user' never does)",
        )
    return anonymous


def _dpop(r: Reader, token: TokenPolicy) -> bool | None:
    if "dpop" not in r.data:
        r.seen.add("dpop")
        return None
    dpop = r.get("dpop", bool, False)
    if dpop and token == "none":
        r.problem("dpop", "needs a token to bind; this route has token = 'none'")
    return dpop


def _certificate_bound(r: Reader, token: TokenPolicy, cert: str | None, upstream: str) -> bool:
    bound = r.get("certificate_bound", bool)
    if not bound:
        return bound
    if token == "none":
        r.problem("certificate_bound", "needs a route that sends a token (token = 'none' sends none)")
    if not upstream.lower().startswith("https://"):
        r.problem("certificate_bound", "needs an https upstream: the token is bound to the TLS client certificate")
    if not cert and not r.data.get("client_cert"):
        r.problem(
            "certificate_bound",
            "needs client_cert and client_key: the same certificate as [oidc] client_cert (RFC 8705 3)",
        )
    return bound


def _route(r: Reader, index: int, prefixes: dict[str, int]) -> RouteSettings:
    path = _path(r, index, prefixes)
    upstream = _upstream(r)
    token = r.choice("token", TOKEN_POLICIES)
    methods = _methods(r)
    set_headers, remove_headers = _header_rules(r)
    ca_bundle = existing_file(r, "ca_bundle")
    resource = _resource(r)
    anonymous = _anonymous(r, token)
    scopes = r.string_list("scopes")
    exchange = read_exchange(r, token, resource=resource, scopes=scopes)
    tls = read_client_cert(r)
    if tls.cert and upstream and not upstream.lower().startswith("https://"):
        r.problem("client_cert", "needs an https upstream: a client certificate is presented only over TLS")
    certificate_bound = _certificate_bound(r, token, tls.cert, upstream)
    proxy = _proxy(r)
    ws = read_websocket_keys(r, proxy=proxy)
    route = RouteSettings(
        path=path,
        upstream=upstream,
        token=token,
        strip_prefix=r.get("strip_prefix", bool),
        methods=methods,
        connect_timeout=r.converted("connect_timeout", parse_duration),
        timeout=r.converted("timeout", parse_duration),
        max_body=r.converted("max_body", parse_size),
        set_headers=set_headers,
        remove_headers=remove_headers,
        ca_bundle=ca_bundle,
        proxy=proxy,
        resource=resource,
        scopes=scopes,
        refresh_on_401=r.get("refresh_on_401", bool),
        anonymous=anonymous,
        exchange=exchange,
        dpop=_dpop(r, token),
        client_cert=tls.cert,
        client_key=tls.key,
        client_key_password=tls.password,
        certificate_bound=certificate_bound,
        websocket=ws.websocket,
        max_message=ws.max_message,
        idle_timeout=ws.idle_timeout,
        session_check=ws.session_check,
    )
    r.finish()
    return route


def read_routes(root: Reader) -> tuple[RouteSettings, ...]:
    prefixes: dict[str, int] = {}
    return tuple(_route(r, index, prefixes) for index, r in tables(root, "routes", RouteSettings))
