"""The ``[[frontends]]`` dispatcher's choice (bff.frontends): Host exact, case-insensitive and port-aware, then the
longest path prefix on whole segments; nothing chosen for anything else, never a default frontend."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from bff.app import ACCESS_LOG_ENV, BffApp
from bff.config import parse_config
from bff.errors import ConfigError
from bff.frontends import FrontendsApp, serving_app_from_env
from bff.types import PATH_PREFIX, Message
from tests.test_config import CONFIG_DIR, EXAMPLE_ENV
from tests.test_config_frontends import entry, multi_document


@pytest.fixture(scope="module")
def app() -> FrontendsApp:
    doc = multi_document(
        entry("a", "https://a.example.com"),
        entry("b", "https://b.example.com:8443"),
        entry("shop", "https://a.example.com", path_prefix="/shop"),
        entry("deep", "https://a.example.com", path_prefix="/shop/admin"),
        {**entry("any", "https://c.example.com", path_prefix="/any"), "host": ""},
    )
    return FrontendsApp(parse_config(doc, env={}))


def scope(host: str | None, path: str, raw: bytes | None = None, kind: str = "http") -> dict[str, Any]:
    headers = [] if host is None else [(b"host", host.encode("latin-1"))]
    return {"type": kind, "path": path, "raw_path": raw or path.encode(), "headers": headers, "method": "GET"}


@pytest.mark.parametrize(
    ("host", "path", "name"),
    [
        ("a.example.com", "/bff/login", "a"),
        ("A.Example.COM", "/api/orders", "a"),
        ("a.example.com:443", "/", "a"),  # the scheme's default port is the origin's
        ("b.example.com:8443", "/x", "b"),
        ("a.example.com", "/shop", "shop"),
        ("a.example.com", "/shop/bff/user", "shop"),
        ("a.example.com", "/shopping", "a"),  # whole segments only
        ("a.example.com", "/shop/admin/x", "deep"),  # the longest prefix
        ("c.example.com", "/any/x", "any"),
        ("whatever.example", "/any/x", "any"),  # no host: any host
        ("a.example.com", "/any/x", "a"),  # a frontend with the host wins over one without
    ],
)
def test_the_most_specific_frontend_is_chosen(app: FrontendsApp, host: str, path: str, name: str) -> None:
    site = app.select(scope(host, path))
    assert site is not None
    assert site.entry.name == name


@pytest.mark.parametrize(
    ("host", "path"),
    [
        ("b.example.com", "/x"),  # b is on :8443
        ("b.example.com:443", "/x"),
        ("a.example.com:8443", "/x"),
        ("evil.example", "/bff/user"),
        (None, "/bff/user"),
        ("a.example.com.", "/x"),
    ],
)
def test_nothing_is_chosen_for_other_hosts(app: FrontendsApp, host: str | None, path: str) -> None:
    assert app.select(scope(host, path)) is None


async def answer(app: FrontendsApp, request: dict[str, Any]) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(request, receive, send)
    return sent


async def test_an_unknown_host_is_404_unknown_frontend_and_a_websocket_is_refused(app: FrontendsApp) -> None:
    sent = await answer(app, scope("evil.example", "/bff/user"))
    assert sent[0]["status"] == 404
    assert b'"error":"unknown_frontend"' in sent[1]["body"]
    assert await answer(app, scope("evil.example", "/ws", kind="websocket")) == [
        {"type": "websocket.close", "code": 1008}
    ]


async def test_a_percent_encoded_prefix_is_not_taken_for_the_prefix(app: FrontendsApp) -> None:
    sent = await answer(app, scope("a.example.com", "/shop/bff/user", raw=b"/%73hop/bff/user"))
    assert sent[0]["status"] == 404
    assert b"unknown_frontend" in sent[1]["body"]


async def test_the_prefix_is_stripped_and_kept_in_the_scope(app: FrontendsApp, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []

    async def record(inner: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(inner)

    site = app.select(scope("a.example.com", "/shop/api/x"))
    assert site is not None
    monkeypatch.setattr(type(site.app), "__call__", lambda self, s, r, w: record(s, r, w))
    await answer(app, scope("a.example.com", "/shop/api/x"))
    assert (seen[0]["path"], seen[0]["raw_path"], seen[0][PATH_PREFIX]) == ("/api/x", b"/api/x", "/shop")
    await answer(app, scope("a.example.com", "/shop"))
    assert (seen[1]["path"], seen[1]["raw_path"]) == ("/", b"/")


def test_one_app_stack_refuses_a_frontends_config(app: FrontendsApp) -> None:
    with pytest.raises(ConfigError, match=r"runs as bff\.frontends\.FrontendsApp"):
        BffApp(app.config)


def test_a_worker_of_bff_serve_builds_the_dispatcher_from_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gc, "freeze", lambda: None)  # a test's objects must stay collectable
    for name, value in {**EXAMPLE_ENV, "BFF_CONFIG": str(CONFIG_DIR / "multi-frontend.toml")}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(ACCESS_LOG_ENV, "1")
    app = serving_app_from_env()
    assert isinstance(app, FrontendsApp)
    assert list(app.apps) == ["shop", "admin"]
    assert app.config.logging.access_log
    monkeypatch.setenv("BFF_CONFIG", str(CONFIG_DIR / "production.toml"))
    assert isinstance(serving_app_from_env(), BffApp)
