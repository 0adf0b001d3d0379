"""The public API for embedding: ``bff.load_config`` and ``bff.create_app``, loaded lazily, and the example in
``bff``'s docstring run as written: a host Starlette app that mounts bff at ``/`` and enters its lifespan, served
on loopback with a real test IdP and a real upstream."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

import bff
from bff.config import Config
from bff.errors import ConfigError
from bff.types import Receive, Scope, Send
from tests.support.oidc_provider import DEFAULT_CLIENT_SECRET, TestProvider
from tests.support.servers import serve

SESSION_KEY = "an-embedding-test-session-key-0123456789abcdef"


def _example() -> str:
    """The indented code block of ``bff.__doc__`` (after the ``::`` line), dedented."""
    doc = bff.__doc__ or ""
    block = doc.split("::\n", 1)[1]
    lines: list[str] = []
    for line in block.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines))


def test_import_bff_loads_neither_the_app_nor_a_web_framework() -> None:
    code = (
        "import sys, bff\n"
        "assert callable(bff.load_config)\n"
        "loaded = [m for m in ('bff.app', 'starlette', 'uvicorn', 'redis', 'httpx') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "assert callable(bff.create_app)\n"
        "assert 'bff.app' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_public_names_are_the_documented_functions() -> None:
    from bff.app import BffApp, create_app
    from bff.config import load_config

    assert bff.create_app is create_app
    assert bff.load_config is load_config
    assert {"create_app", "load_config"} <= set(bff.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        bff.nothing  # noqa: B018 - the attribute access is the test
    assert create_app.__annotations__["return"] in ("BffApp", BffApp)


def test_load_config_reports_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bff.toml"
    path.write_text('[server]\npublic_origin = "ftp://x"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        bff.load_config(path)
    assert "server.public_origin: must be an absolute http(s) URL" in info.value.problems
    assert "session: section is required" in info.value.problems


async def _upstream(scope: Scope, receive: Receive, send: Send) -> None:
    """An upstream that answers every request with its own path and whether a bearer token came along."""
    assert scope["type"] == "http"
    headers = dict(scope["headers"])
    body = f"{scope['path']} bearer={b'authorization' in headers}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


def _config_text(origin: str, issuer: str, upstream: str) -> str:
    return f"""
[server]
public_origin = "{origin}"

[session]
keys = ["{SESSION_KEY}"]

[oidc]
issuer = "{issuer}"
client_id = "spa-bff"
client_secret = "{DEFAULT_CLIENT_SECRET}"

[[routes]]
path = "/api/public"
upstream = "{upstream}"
token = "none"
"""


async def test_the_docstring_example_mounts_bff_in_a_host_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, idp: TestProvider
) -> None:
    host_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    host_socket.bind(("127.0.0.1", 0))
    origin = f"http://127.0.0.1:{host_socket.getsockname()[1]}"
    with serve(_upstream) as upstream:
        (tmp_path / "bff.toml").write_text(_config_text(origin, idp.issuer, upstream), encoding="utf-8")
        monkeypatch.chdir(tmp_path)
        namespace: dict[str, Any] = {}
        exec(compile(_example(), "bff.__doc__", "exec"), namespace)  # noqa: S102 - the documented example, as written
        assert isinstance(namespace["proxy"].config, Config)
        with serve(namespace["app"], sock=host_socket) as base:
            async with httpx.AsyncClient(base_url=base, timeout=10, headers={"X-CSRF": "1"}) as client:
                async with asyncio.timeout(30):
                    hello = await client.get("/hello")
                    # Ready only if the host's lifespan ran bff's: it loads the IdP metadata and opens the store.
                    ready = await client.get("/readyz")
                    user = await client.get("/bff/user")
                    proxied = await client.get("/api/public/orders")
                    missing = await client.get("/nowhere")
    assert (hello.status_code, hello.text) == (200, "hello from the host app")
    assert ready.status_code == 200, ready.text
    assert (user.status_code, user.json()["error"]) == (401, "unauthenticated")
    assert (proxied.status_code, proxied.text) == (200, "/orders bearer=False")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
