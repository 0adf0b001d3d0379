"""Which request targets the proxy forwards at all: a strict allow-list on the RAW path and query.

The upstream URL is the route's base URL followed by the request's raw path and query, never a decoded and re-joined
path, so a request can neither change the upstream host nor climb out of the route's prefix. That only holds if the
upstream sees the same path bff matched, so anything an upstream could normalise into a different path is refused
with 400 ``invalid_path`` before any upstream call:

- dot segments (``.``, ``..``) and empty segments (``//``): RFC 3986 5.2.4 remove_dot_segments, and servers that
  merge slashes;
- percent-encoded ``.``, ``/``, ``\\`` and ``%`` (in any case; ``%25`` also blocks every double encoding such as
  ``%252e``), ``;`` and NUL/control octets: the encodings a decoding upstream or framework turns back into
  traversal (CVE-2021-41773's ``.%2e``, Spring Security's ``StrictHttpFirewall`` refuses the same set);
- ``;`` anywhere (Tomcat's path parameters: ``/..;/`` climbs a directory there), ``\\`` (Windows servers and
  WHATWG URL parsers read it as ``/``), ``@`` (userinfo confusion) and any octet outside RFC 3986 ``pchar``
  (control characters, spaces, non-ASCII);
- a target that does not start with ``/`` (absolute-form or asterisk-form reaching the app).

Both functions are on the hot path: byte operations in C (``translate``/``find``), no regular expressions.
"""

from __future__ import annotations

import string

from bff.errors import InvalidPath

# RFC 3986 pchar without ";" and "@" (see above), plus "/" as separator and "%" for escapes (checked separately).
_PATH_OCTETS = (string.ascii_letters + string.digits + "-._~" + "!$&'()*+,=" + ":" + "/" + "%").encode("ascii")
# Query: any visible ASCII octet but "#". The query is forwarded verbatim and the upstream parses it; refusing
# controls, spaces and non-ASCII keeps the request line that the upstream client writes well-formed.
_QUERY_OCTETS = bytes(c for c in range(0x21, 0x7F) if c != ord("#"))
_HEX = frozenset(b"0123456789abcdefABCDEF")
# Octets that must not appear percent-encoded in a path: NUL and controls, "%" (double encoding), ".", "/", ";", "\".
_FORBIDDEN_ESCAPES = frozenset([*range(0x20), 0x7F, ord("%"), ord("."), ord("/"), ord(";"), ord("\\")])


def check_path(raw_path: bytes) -> None:
    """Raise :class:`InvalidPath` unless ``raw_path`` (ASGI ``raw_path``) is safe to append to an upstream URL."""
    if not raw_path.startswith(b"/"):
        raise InvalidPath("the path must start with /")
    if raw_path.translate(None, _PATH_OCTETS):
        raise InvalidPath("the path contains a character that is not allowed")
    if b"//" in raw_path:
        raise InvalidPath("the path contains an empty segment")
    if b"/." in raw_path:
        for segment in raw_path.split(b"/"):
            if segment in (b".", b".."):
                raise InvalidPath("the path contains a dot segment")
    i = raw_path.find(b"%")
    while i >= 0:
        escape = raw_path[i + 1 : i + 3]
        if len(escape) != 2 or escape[0] not in _HEX or escape[1] not in _HEX:
            raise InvalidPath("the path contains a malformed percent-encoding")
        if int(escape, 16) in _FORBIDDEN_ESCAPES:
            raise InvalidPath("the path contains a percent-encoded character that is not allowed")
        i = raw_path.find(b"%", i + 3)


def check_query(query_string: bytes) -> None:
    """Raise :class:`InvalidPath` if the raw query contains octets that cannot appear in a request line."""
    if query_string and query_string.translate(None, _QUERY_OCTETS):
        raise InvalidPath("the query string contains a character that is not allowed")
