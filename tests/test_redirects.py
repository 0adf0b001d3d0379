"""returnTo must never lead off the app's origin: our own cases plus two public regression corpora."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest

from bff.redirects import safe_return_to

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
CORPUS_FILES = ["oauth2-proxy-openredirects.txt", "mod_auth_openidc-open-redirect-payload-list.txt"]
ORIGIN = "https://app.example.com"


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
    escaped = [p for p in payloads if not _lands_on_our_origin(safe_return_to(p))]
    assert escaped == []
    # And the strict checks, not only the origin prefix, do the work for the scheme-relative tricks:
    assert all(safe_return_to(p) == "/" for p in payloads if p.startswith(("//", "/\\", "\\", "http")))
