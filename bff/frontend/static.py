"""``[frontend] directory``: the SPA's built files, served by bff itself. Raw ASGI, with Starlette's ``FileResponse``
for the transfer.

Why not ``starlette.staticfiles.StaticFiles``: its ``html=True`` mode answers a miss with ``404.html``, not with the
SPA's ``index.html``; it cannot tell a navigation from an asset request; and a cache policy per kind of file would
mean overriding most of it. ``FileResponse`` keeps what is worth keeping (``ETag``/``Last-Modified`` from the file's
stat, ``Range``, ``HEAD``, ``http.response.pathsend``); the lookup, the fallback and the headers are here.

A request, in order:

1. ``GET`` and ``HEAD`` only (405 with ``Allow`` otherwise); WebSockets are refused.
2. The raw path is vetted before the filesystem is touched (400 ``invalid_path``): percent-encoded ``/`` or ``\\``,
   a backslash, NUL or other control characters after decoding, dot segments (``.``, ``..``, also as ``%2e%2e``),
   empty segments (``//etc/passwd``), text that is not UTF-8. Names starting with ``.`` (``.git``, ``.env``) are
   never served (404), except ``.well-known``.
3. The segments are joined under the directory's real path, and the candidate's real path must still be inside it,
   so a symlink pointing out of the directory is a 404 (symlinks within it work). A directory means its
   ``index.html``.
4. A miss is a 404, except for a navigation to a client-side route: ``GET``/``HEAD``, no file extension in the last
   segment, ``Accept`` naming ``text/html``. That gets ``index.html`` (so ``/orders/7`` opens the SPA, but a
   missing ``/app.js`` is a 404 and never HTML that the browser would try to run).

Caching (RFC 9111): HTML, ``index.html`` first, is ``no-cache`` (always revalidated, so a deploy is seen at
once); fingerprinted assets (``app.3f2a9c1b.js``, ``index-Bd3XfTaK.css``: a name part of 8+ letters and digits
that looks like a content hash) are ``public, max-age=31536000, immutable``; anything else is ``public,
max-age=300`` and then revalidated with ``ETag``/``If-None-Match`` or ``Last-Modified``/``If-Modified-Since``
(304). When unsure whether a name is fingerprinted the short policy wins: a year of a stale file is worse than a
revalidation.

Every answer carries ``X-Content-Type-Options: nosniff``; HTML (and SVG, which can run script when opened
directly) also gets ``Content-Security-Policy``, ``Referrer-Policy: same-origin`` and ``X-Frame-Options: DENY``.
The CSP allows scripts, styles, fonts and connections to this origin only (the SPA talks to nothing else: bff
proxies its APIs), ``data:`` images, no plugins, no framing, no ``<base>`` hijack.
"""

from __future__ import annotations

import email.utils
import mimetypes
import os
import re
import stat
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

import anyio.to_thread
from starlette.responses import FileResponse

from bff.errors import InvalidPath, MethodNotAllowed, NotFound
from bff.proxy import send_error
from bff.types import Receive, Scope, Send

DEFAULT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'"
)
NO_CACHE = "no-cache"
IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=300"

#: Types ``mimetypes`` may not know on every system; with ``nosniff`` a wrong type stops a module script loading.
_MEDIA_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".wasm": "application/wasm",
    ".webmanifest": "application/manifest+json",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".ico": "image/x-icon",
}
_DOCUMENT_TYPES = frozenset({".html", ".htm", ".svg"})
_ENCODED_SEPARATOR = re.compile(rb"%(?:2f|5c)", re.IGNORECASE)
_CONTROL = re.compile("[\x00-\x1f\x7f\\\\]")
#: A ``.``- or ``-``-separated name part of 8 to 64 word characters, followed by more of the name.
_HASH_PART = re.compile(r"[.-]([A-Za-z0-9_]{8,64})(?=\.)")
_HEX = frozenset("0123456789abcdef")
_ALLOWED = b"GET, HEAD"


def is_fingerprinted(name: str) -> bool:
    """Whether a file name carries a content hash: a part with letters and digits, or lower-case hex only."""
    for match in _HASH_PART.finditer(name):
        part = match.group(1)
        has_digit = any(c.isdigit() for c in part)
        if (has_digit and any(c.isalpha() for c in part)) or set(part) <= _HEX:
            return True
    return False


def cache_control(name: str) -> str:
    suffix = os.path.splitext(name)[1].lower()
    if suffix in (".html", ".htm"):
        return NO_CACHE
    return IMMUTABLE if is_fingerprinted(name) else SHORT


def media_type(name: str) -> str:
    suffix = os.path.splitext(name)[1].lower()
    return _MEDIA_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def request_segments(raw_path: bytes) -> list[str]:
    """The decoded path segments of a request target, or :class:`InvalidPath` for anything that could climb out
    of the directory or mean something else to the filesystem than to the URL."""
    if not raw_path.startswith(b"/"):
        raise InvalidPath("the path must start with /")
    if _ENCODED_SEPARATOR.search(raw_path):
        raise InvalidPath("the path contains an encoded slash or backslash")
    try:
        path = unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidPath("the path is not UTF-8") from exc
    if _CONTROL.search(path):
        raise InvalidPath("the path contains a control character or a backslash")
    segments = path.split("/")[1:]
    for i, segment in enumerate(segments):
        if segment in (".", ".."):
            raise InvalidPath("the path contains a dot segment")
        if not segment and i != len(segments) - 1:  # only a trailing slash may leave a segment empty
            raise InvalidPath("the path contains an empty segment")
    return segments


@dataclass(frozen=True, slots=True)
class _Found:
    path: str
    stat: os.stat_result


class StaticFrontend:
    """Raw ASGI app serving ``directory`` (see the module docstring for the rules)."""

    def __init__(self, directory: str, *, content_security_policy: str = DEFAULT_CSP) -> None:
        self._root = os.path.realpath(directory)
        self._csp = content_security_policy

    async def aclose(self) -> None:
        """Nothing to release: files are opened per request and closed by ``FileResponse``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # a WebSocket has nothing to talk to here: refuse the handshake (403)
            await send({"type": "websocket.close", "code": 1008})
            return
        method: str = scope["method"]
        if method not in ("GET", "HEAD"):
            await send_error(send, MethodNotAllowed(f"{method} is not allowed here"), [(b"allow", _ALLOWED)])
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        try:
            segments = request_segments(raw_path)
        except InvalidPath as exc:
            await send_error(send, exc)
            return
        found = await anyio.to_thread.run_sync(self._lookup, segments)
        if found is None and _is_navigation(scope, segments):
            found = await anyio.to_thread.run_sync(self._lookup, ["index.html"])
        if found is None:
            await send_error(send, NotFound("no such file"))
            return
        await self._send_file(scope, receive, send, found)

    def _lookup(self, segments: list[str]) -> _Found | None:
        """The regular file the segments name inside the root (a directory's ``index.html``), else None."""
        if any(s.startswith(".") and s != ".well-known" for s in segments):
            return None
        candidate = os.path.realpath(os.path.join(self._root, *segments))
        if candidate != self._root and not candidate.startswith(self._root + os.sep):
            return None  # a symlink (or anything else) resolving outside the directory
        try:
            st = os.stat(candidate)
            if stat.S_ISDIR(st.st_mode):
                return self._lookup([*(s for s in segments if s), "index.html"])
        except OSError:  # missing, unreadable, a name too long, ...
            return None
        return _Found(candidate, st) if stat.S_ISREG(st.st_mode) else None

    async def _send_file(self, scope: Scope, receive: Receive, send: Send, found: _Found) -> None:
        name = os.path.basename(found.path)
        headers = {"cache-control": cache_control(name), "x-content-type-options": "nosniff"}
        if os.path.splitext(name)[1].lower() in _DOCUMENT_TYPES:
            headers |= {
                "content-security-policy": self._csp,
                "referrer-policy": "same-origin",
                "x-frame-options": "DENY",
            }
        response = FileResponse(found.path, headers=headers, media_type=media_type(name), stat_result=found.stat)
        if _not_modified(scope, response.headers["etag"], found.stat.st_mtime):
            kept = ("cache-control", "etag", "last-modified", "content-security-policy", "x-content-type-options")
            raw = [(k.encode(), v.encode()) for k in kept if (v := response.headers.get(k)) is not None]
            await send({"type": "http.response.start", "status": 304, "headers": raw})
            await send({"type": "http.response.body", "body": b""})
            return
        await response(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _is_navigation(scope: Scope, segments: list[str]) -> bool:
    """A browser asking for a page at a client-side route: no file extension, and HTML accepted."""
    last = next((s for s in reversed(segments) if s), "")
    accept = _header(scope, b"accept") or ""
    return "." not in last and "text/html" in accept.lower()


def _not_modified(scope: Scope, etag: str, mtime: float) -> bool:
    """RFC 9110 13.1.2/13.1.3: ``If-None-Match`` (weak comparison) wins over ``If-Modified-Since``."""
    if_none_match = _header(scope, b"if-none-match")
    if if_none_match is not None:
        tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
        return "*" in tags or etag.removeprefix("W/") in tags
    if_modified_since = _header(scope, b"if-modified-since")
    if if_modified_since is None:
        return False
    try:
        since = email.utils.parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError):
        return False
    return since.tzinfo is not None and int(mtime) <= since.timestamp()
