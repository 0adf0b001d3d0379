"""Same-origin redirect targets: the only kind bff ever redirects to after login.

``safe_return_to`` keeps a ``returnTo`` value only when it is unmistakably a relative path on our own origin, and
falls back to ``/`` otherwise. Browsers are lenient URL parsers (WHATWG URL: backslashes count as slashes, tabs and
newlines are removed, ``//host`` is scheme-relative), so the check is deliberately strict: it refuses anything that
any parser could read as another origin, including after percent-decoding. The one normalisation it does is the
one the browser would do anyway: dot segments are removed (RFC 3986 5.2.4, with ``%2e`` counting as ``.`` as in the
WHATWG URL standard) and the result is checked again, because ``/.//evil`` is same-origin as sent but becomes the
path ``//evil`` once resolved, which a SPA router that navigates to ``location.pathname`` reads as another host.
The caller then prefixes the public origin (``https://app.example.com`` + path), so even a path the checks missed
cannot change the host. Regression corpora: oauth2-proxy ``testdata/openredirects.txt`` and mod_auth_openidc
``test/open-redirect-payload-list.txt`` (``tests/test_return_to.py``).
"""

from __future__ import annotations

import unicodedata
from urllib.parse import unquote, urlsplit

MAX_RETURN_TO = 2048
FALLBACK = "/"
#: Path segments a browser resolves as "." and ".." (WHATWG URL "single-dot" and "double-dot" segments).
_SINGLE_DOT = frozenset({".", "%2e"})
_DOUBLE_DOT = frozenset({"..", ".%2e", "%2e.", "%2e%2e"})


def remove_dot_segments(value: str) -> str:
    """``value`` (a path with optional query and fragment) with the path's dot segments resolved, as a browser
    resolves them (RFC 3986 5.2.4; WHATWG URL path state, where ``%2e`` is a dot and a final dot segment leaves a
    trailing slash). The query and fragment are kept as they are."""
    end = min((i for i in (value.find("?"), value.find("#")) if i >= 0), default=len(value))
    segments = value[:end].split("/")[1:]
    out: list[str] = []
    for i, segment in enumerate(segments):
        lowered = segment.lower()
        if lowered in _DOUBLE_DOT:
            if out:
                out.pop()
        elif lowered not in _SINGLE_DOT:
            out.append(segment)
            continue
        if i == len(segments) - 1:
            out.append("")
    return "/" + "/".join(out) + value[end:]


def _looks_safe(path: str, *, decoded: bool = False) -> bool:
    if not path.startswith("/") or path.startswith(("//", "/\\")) or "\\" in path:
        return False
    if decoded:
        # After decoding, a space in a query is fine; control and format characters (tab, newline, bidi
        # overrides) are not: browsers strip some of them, which can turn "/\t/evil" into "//evil".
        if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in path):
            return False
    elif any(ord(c) <= 0x20 or ord(c) >= 0x7F for c in path):
        # As sent, the value must be plain printable ASCII: anything else a browser may strip or reinterpret.
        return False
    parts = urlsplit(path)
    return not parts.scheme and not parts.netloc


def safe_return_to(value: str | None, fallback: str = FALLBACK) -> str:
    """``value`` with its dot segments resolved when it is a same-origin relative path (``/orders?x=1#top``) before
    and after that resolution, else ``fallback`` (``/``)."""
    if not value or len(value) > MAX_RETURN_TO or not _looks_safe(value):
        return fallback
    resolved = remove_dot_segments(value)
    if not _looks_safe(resolved):
        return fallback
    # Encoded tricks (%2f%2fevil, %5c, %09, %2e, double encoding): every decoding of the value must be safe too,
    # before and after its dot segments are resolved (a SPA may decode the path it is handed, then navigate), and so
    # must every decoding of what is handed over: resolving "/%252e//%252e/.." leaves "/%252e//", whose decoding
    # "/%2e//" resolves to "//".
    if not _every_decoding_safe(value) or not _every_decoding_safe(resolved):
        return fallback
    return resolved


def _every_decoding_safe(value: str) -> bool:
    """Each percent-decoding of ``value`` (up to three rounds) looks safe, before and after dot-segment removal."""
    decoded = value
    for _ in range(3):
        try:
            once = unquote(decoded, errors="strict") if "%" in decoded else decoded
        except UnicodeDecodeError:  # bytes that are no UTF-8: no path of ours
            return False
        if once == decoded:
            return True
        if not _looks_safe(once, decoded=True) or not _looks_safe(remove_dot_segments(once), decoded=True):
            return False
        decoded = once
    return "%" not in decoded  # still encoded after three rounds: nobody needs that
