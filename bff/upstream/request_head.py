"""The request side of the data-plane client: where a URL goes, and the request head written for it.

Nothing is re-encoded: the target is sent exactly as given, because the proxy has already vetted the raw path and
re-quoting or dot-segment normalisation here would undo that vetting. What is written is checked first so that no
name, value or target can break out of its line: a token or a header that an IdP or the config could control, with
a CR or LF in it, would be a request-smuggling vector (RFC 9112 2.2, 3.2; RFC 9110 5.5). The body framing is bff's
own: ``Host``, ``Content-Length`` and ``Transfer-Encoding`` from the caller are replaced by what the body is.
"""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass

RequestBody = bytes | AsyncIterable[bytes] | None

#: Methods whose request without a body still says ``Content-Length: 0`` (RFC 9110 8.6: a user agent SHOULD).
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: RFC 9110 5.6.2 ``token``: what a field name may be.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: A request target (RFC 9112 3.2) is visible ASCII: no space, no control character, nothing beyond 0x7E.
_BAD_TARGET = re.compile(r"[^\x21-\x7e]")


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a URL's requests go, from the part of the URL before its path (cached: routes have few origins)."""

    https: bool
    host: str
    port: int
    #: The ``Host`` header: the authority as written, default port left out (RFC 9110 7.2).
    authority: str


@functools.lru_cache(maxsize=256)
def origin_of(prefix: str) -> Origin:
    scheme, sep, authority = prefix.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https") or not authority or "@" in authority:
        raise ValueError("not an absolute http(s) URL without credentials")
    default = 443 if scheme == "https" else 80
    if authority.startswith("["):  # an IPv6 literal
        host, bracket, rest = authority[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError("malformed authority")
    else:
        host, _, port_text = authority.partition(":")
    port = int(port_text) if port_text else default
    if not host or not 0 < port < 65536:
        raise ValueError("malformed authority")
    shown = f"[{host}]" if ":" in host else host
    return Origin(scheme == "https", host, port, shown if port == default else f"{shown}:{port}")


def split_url(url: str) -> tuple[Origin, str]:
    """The origin and the request target (path and query) of an absolute URL, without re-encoding anything."""
    start = url.find("://")
    end = len(url)
    for delimiter in "/?#":
        at = url.find(delimiter, start + 3 if start >= 0 else 0)
        if at != -1 and at < end:
            end = at
    origin = origin_of(url[:end])
    target = url[end:].partition("#")[0]
    if not target.startswith("/"):
        target = "/" + target
    if _BAD_TARGET.search(target):
        raise ValueError("the request target holds a character that cannot be sent")
    return origin, target


@functools.lru_cache(maxsize=1024)
def checked_name(name: str) -> str:
    """A header name, lower-cased, once it is known to be a ``token``."""
    if not _TOKEN.fullmatch(name):
        raise ValueError("a header name is not an RFC 9110 token")
    return name.lower()


def request_head(
    method: str, target: str, authority: str, headers: Sequence[tuple[str, str]], body: RequestBody
) -> tuple[bytes, int | None]:
    """The request line and header block, and the Content-Length a streamed body must match (None: chunked).

    Framing is bff's: ``Host``, ``Content-Length`` and ``Transfer-Encoding`` given by the caller are replaced by what
    the body is (a length that disagreed with the body would be a request-smuggling vector)."""
    if not _TOKEN.fullmatch(method):
        raise ValueError("the method is not an RFC 9110 token")
    lines = [f"{method} {target} HTTP/1.1\r\nhost: {authority}\r\n"]
    # What the caller gave that is written as it is: the method and names are tokens, the rest is bff's own text.
    written = [target, authority]
    declared: str | None = None
    for raw_name, value in headers:
        name = checked_name(raw_name)
        if name == "content-length":
            declared = value
            continue
        if name in ("host", "transfer-encoding"):
            continue
        lines.append(f"{name}: {value}\r\n")
        written.append(value)
    length: int | None = None
    if isinstance(body, bytes):
        lines.append(f"content-length: {len(body)}\r\n")
    elif body is None:
        if method in _BODY_METHODS:
            lines.append("content-length: 0\r\n")
    elif declared is not None and declared.isdigit():
        length = int(declared)
        lines.append(f"content-length: {length}\r\n")
    else:
        lines.append("transfer-encoding: chunked\r\n")
    lines.append("\r\n")
    # So every CR and LF in the head is one of the line ends written here; NUL is never allowed (RFC 9110 5.5).
    # Three ``in`` tests of one string (memchr) rather than counting every character of the head.
    given = "".join(written)
    if "\r" in given or "\n" in given or "\x00" in given:
        raise ValueError("a header value holds CR, LF or NUL")
    return "".join(lines).encode("latin-1"), length
