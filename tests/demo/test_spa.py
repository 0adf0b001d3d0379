"""The demo SPA: shipped as bff-devtools' package data, served by bff with its security headers, and written so that
the page's Content-Security-Policy holds (no inline script or style) and no token or custom-header-less call sneaks
in."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bff.app import BffApp
from bff_devtools.demo.run import SPA_DIR, DemoOptions, build_bff_config
from tests.support.servers import free_port, serve

ROOT = Path(__file__).resolve().parent.parent.parent
IDS = (
    "login",
    "logout",
    "user",
    "call-me",
    "call-items",
    "call-admin",
    "call-slow",
    "call-reports",
    "start-ticks",
    "ticks",
    "result",
    "refreshed",
    "error",
)


def _read(name: str) -> str:
    return (SPA_DIR / name).read_text(encoding="utf-8")


def _calls(source: str, function: str) -> list[str]:
    """The argument text of every ``function(...)`` call in ``source`` (parentheses balanced)."""
    calls = []
    for match in re.finditer(re.escape(function) + r"\(", source):
        depth, i = 1, match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(source[i], 0)
            i += 1
        calls.append(source[match.end() : i - 1])
    return calls


def test_the_spa_is_package_data() -> None:
    pyproject = tomllib.loads((ROOT / "devtools" / "pyproject.toml").read_text())
    assert "demo/spa/*" in pyproject["tool"]["setuptools"]["package-data"]["bff_devtools"]
    files = sorted(p.name for p in SPA_DIR.iterdir())
    assert files == ["app.js", "index.html", "style.css"]  # flat: the glob above ships every file


def test_index_has_the_stable_ids_and_nothing_inline() -> None:
    html = _read("index.html")
    for element_id in IDS:
        assert len(re.findall(rf'\bid="{element_id}"', html)) == 1, element_id
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts == ['<script src="/app.js" defer>']  # no inline script: CSP script-src 'self'
    assert not re.search(r"\son[a-z]+\s*=", html)  # no inline event handlers
    assert not re.search(r"\sstyle\s*=|<style", html)  # CSP style-src 'self'
    for element_id in IDS:
        assert f'$("{element_id}")' in _read("app.js"), f"app.js never uses #{element_id}"


def test_app_js_sends_the_csrf_header_and_never_handles_tokens() -> None:
    js = _read("app.js")
    calls = _calls(js, "fetch")
    assert len(calls) >= 4
    for arguments in calls:
        assert "headers:" in arguments, f"fetch({arguments}) without X-CSRF"
    assert 'const CSRF = { "X-CSRF": "1" };' in js
    # sessionStorage holds one thing: the call to retry after a step-up login ({method, path}), never a token.
    storage = re.findall(r"sessionStorage\.\w+\([^)]*\)?", js)
    assert storage == [
        "sessionStorage.setItem(STEP_UP_RETRY, JSON.stringify({ method, path })",
        "sessionStorage.getItem(STEP_UP_RETRY)",
        "sessionStorage.removeItem(STEP_UP_RETRY)",
    ]
    for forbidden in ("localStorage", "Authorization", "EventSource(", "document.cookie ="):
        assert forbidden not in js
    assert "/bff/login?returnTo=" in js
    assert "logout_url" in js
    assert "access_token_expires_at" in js  # refreshes are seen by the expiry moving, never by a token


@pytest.fixture(scope="module")
def bff_url() -> Iterator[str]:
    options = DemoOptions(port=free_port(), idp_port=free_port(), api_port=free_port())
    # No IdP is running: bff still serves the SPA (and retries the IdP in the background).
    with serve(BffApp(build_bff_config(options))) as url:
        yield url


async def test_bff_serves_the_spa_with_its_headers(bff_url: str) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        page = await client.get(bff_url + "/", headers={"Accept": "text/html"})
        assert page.status_code == 200
        assert page.text == _read("index.html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-cache"
        script = await client.get(bff_url + "/app.js")
        assert script.headers["content-type"].startswith("text/javascript")
        style = await client.get(bff_url + "/style.css")
        assert style.headers["content-type"].startswith("text/css")
        route = await client.get(bff_url + "/some/client/route", headers={"Accept": "text/html"})
        assert route.text == page.text
