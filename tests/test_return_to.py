"""returnTo must never lead off the app's origin: our own cases plus two public regression corpora."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import ada_url
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bff.return_to import safe_return_to

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
CORPUS_FILES = ["oauth2-proxy-openredirects.txt", "mod_auth_openidc-open-redirect-payload-list.txt"]
ORIGIN = "https://app.example.com"
DOT_SEGMENTS = {".", "..", "%2e", ".%2e", "%2e.", "%2e%2e"}


def _lands_on_our_origin(return_to: str) -> bool:
    # The callback redirects to public_origin + return_to; resolve it the way a browser resolves Location.
    for target in (ORIGIN + return_to, urljoin(ORIGIN + "/", return_to)):
        parts = urlsplit(target)
        if (parts.scheme, parts.netloc) != ("https", "app.example.com"):
            return False
    return True


@pytest.mark.parametrize(
    "value",
    [
        "//evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "https://evil.example",
        "http:evil",
        "javascript:alert(1)",
        "/%2f%2fevil.example",
        "/%5cevil.example",
        "/%252f%252fevil.example",
        "/\t/evil.example",
        "/%09/evil.example",
        "/\r\n/evil",
        "evil.example",
        "",
        "/caf\u00e9",
        "/" + "a" * 3000,
        "/%2F%2Fevil",
        "/%E2%80%AE",
        "/%ff",  # no UTF-8 once decoded
        "/%252e//%252e/..",  # resolves to "/%252e//", whose decoding "/%2e//" resolves to "//"
        " /x",
    ],
)
def test_unsafe_values_fall_back_to_root(value: str) -> None:
    assert safe_return_to(value) == "/"


@pytest.mark.parametrize("value", ["/", "/orders", "/orders/7?tab=items&x=%20y#top", "/a/b/c/"])
def test_same_origin_paths_are_kept(value: str) -> None:
    assert safe_return_to(value) == value


def test_missing_value() -> None:
    assert safe_return_to(None) == "/"


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_public_open_redirect_corpora(name: str) -> None:
    path = CORPORA / name
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared corpora live beside the repository)")
    payloads = [line for line in path.read_text(encoding="utf-8").split("\n") if line]
    assert len(payloads) > 500
    escaped = [p for p in payloads if not (_lands_on_our_origin(safe_return_to(p)) and _spa_safe(safe_return_to(p)))]
    assert escaped == []
    # And the strict checks, not only the origin prefix, do the work for the scheme-relative tricks:
    assert all(safe_return_to(p) == "/" for p in payloads if p.startswith(("//", "/\\", "\\", "http")))


def _browser_path(value: str) -> tuple[str, str]:
    """(origin, path) a browser gives ``public_origin + value``: ada is a WHATWG URL parser, as browsers are."""
    url = ada_url.URL(value, ORIGIN + "/")
    return url.origin, url.pathname


def _spa_safe(result: str) -> bool:
    """The browser lands on our origin, and the path the SPA then reads (``location.pathname``, also once or twice
    decoded) cannot be taken for another origin when the SPA navigates to it (``//host``, ``/\\host``)."""
    form = result
    for _ in range(3):
        origin, path = _browser_path(form)
        if origin != ORIGIN or path.startswith(("//", "/\\")):
            return False
        form = unquote(form)
    return True


@pytest.mark.parametrize(
    "value",
    [
        "/.//evil.example",
        "/..//evil.example",
        "/./..//evil.example",
        "/a/..//evil.example",
        "/a/b/../..//evil.example",
        "/%2e//evil.example",
        "/%2E//evil.example",
        "/.%2e//evil.example",
        "/%2e%2E//evil.example",
        "/%252e//evil.example",
        "/%2e%2f/evil.example",
        "/a%3F/..//evil.example",
        "/.\\/evil.example",
        "/./\\evil.example",
        "/.%5c/evil.example",
        "/.\t//evil.example",
        "/.%09//evil.example",
        "/.\n//evil.example",
        "/.%0a//evil.example",
        "/..%2f%2fevil.example",
    ],
)
def test_dot_segments_never_yield_a_scheme_relative_spa_path(value: str) -> None:
    result = safe_return_to(value)
    assert _spa_safe(result), result
    assert result == "/"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/./orders", "/orders"),
        ("/a/b/../c?x=/./#/..", "/a/c?x=/./#/.."),
        ("/orders/.", "/orders/"),
        ("/orders/..", "/"),
        ("/..", "/"),
        ("/%2e%2e/orders", "/orders"),
    ],
)
def test_dot_segments_are_removed_as_a_browser_would(value: str, expected: str) -> None:
    assert safe_return_to(value) == expected
    assert _browser_path(expected) == _browser_path(value)


PIECES = [
    "/",
    "//",
    ".",
    "..",
    "/.",
    "/..",
    "%2e",
    "%2E",
    "%252e",
    "%2f",
    "%5c",
    "\\",
    "\t",
    "%09",
    "a",
    "evil",
    "?",
    "#",
    ":",
    "@",
]


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=10).map("".join))
def test_no_value_leaves_the_origin_or_yields_a_scheme_relative_path(value: str) -> None:
    result = safe_return_to(value)
    assert result.startswith("/")
    assert _spa_safe(result), (value, result)
    # What bff hands over is already what the browser will show: no dot segment left for it to resolve.
    path = urlsplit(result).path
    assert not DOT_SEGMENTS & {segment.lower() for segment in path.split("/")}, (value, result)
