"""panva's ``oidc-provider`` (npm, OpenID Certified) as a second, independent OpenID Provider on loopback.

* :func:`install_oidc_provider` runs ``npm ci`` in ``tests/interop/oidc_provider`` (the pinned package.json and
  package-lock.json), once per lockfile: a stamp in ``node_modules`` remembers the lockfile it installed;
* :func:`running_oidc_provider` starts ``node provider.mjs`` (it listens on a free port and prints its issuer),
  reads its discovery document and stops it at the end;
* :class:`NodeOP` is what a test does with it: register a client (RFC 7591), sign in through the provider's
  development interactions (login form, then consent) over HTTP, confirm an RP-initiated logout, read the
  provider's event log, introspect a token (RFC 7662).

Without node and npm, or with a Node.js older than 20.19, the tests skip, except under CI (``CI=true``), where they
fail: CI installs both.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.browser import Browser
from tests.support.interop_op import Registration, submit_form

PROVIDER_DIR = Path(__file__).resolve().parent.parent / "interop" / "oidc_provider"
_STAMP = ".bff-lock-sha256"


#: oidc-provider 9 runs on Node.js >= 20.19 (tests/interop/oidc_provider/package.json, "engines").
MIN_NODE = (20, 19)


def require_node() -> tuple[str, str]:
    """The paths of ``node`` and ``npm``; skips the test without them, or with a Node.js older than
    :data:`MIN_NODE`, and fails it instead under CI (``CI=true``), which must run the interop tests."""
    node, npm = shutil.which("node"), shutil.which("npm")
    problem = None
    if node is None or npm is None:
        problem = "node and npm are needed to run oidc-provider (apt-get install -y nodejs npm)"
    else:
        version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
        if _version(version) < MIN_NODE:
            problem = f"oidc-provider needs Node.js >= {'.'.join(map(str, MIN_NODE))}, {node} is {version!r}"
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{problem}; CI must not skip the interop tests")
        pytest.skip(problem)
    assert node is not None
    assert npm is not None
    return node, npm


def _version(text: str) -> tuple[int, ...]:
    """``v20.19.2`` -> (20, 19, 2); anything else -> ()."""
    match = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", text)
    return tuple(int(part) for part in match.groups()) if match else ()


def install_oidc_provider() -> Path:
    """``npm ci`` the pinned oidc-provider unless this lockfile is installed already; returns the directory."""
    _, npm = require_node()
    lock = hashlib.sha256((PROVIDER_DIR / "package-lock.json").read_bytes()).hexdigest()
    stamp = PROVIDER_DIR / "node_modules" / _STAMP
    if stamp.is_file() and stamp.read_text() == lock:
        return PROVIDER_DIR
    done = subprocess.run(
        [npm, "ci", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=PROVIDER_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"npm ci of oidc-provider failed ({done.returncode}):\n{done.stderr[-3000:]}")
    stamp.write_text(lock)
    return PROVIDER_DIR


class NodeOP:
    """A running oidc-provider, from a test's side (``tests.support.interop_op.OP``)."""

    #: Its access tokens for the test API (the resource ``provider.mjs`` defaults to) are JWTs for this audience.
    audience = "interop-api"
    oidc_settings: Mapping[str, Any] = {
        "scopes": ["openid", "profile", "email", "offline_access", "api:read"],
        # OpenID Connect Core 11: offline access (a refresh token) is granted with prompt=consent only.
        "extra_auth_params": {"prompt": "consent"},
    }
    user = ("alice", "alice Example")
    logs_out_on_reuse = False  # it revokes the grant; its back-channel logout is for ended sessions

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer
        self._metadata: dict[str, Any] = httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=10).json()

    def metadata(self) -> Mapping[str, Any]:
        return self._metadata

    def register(self, origin: str) -> Registration:
        """Register a client for the bff at ``origin`` (RFC 7591)."""
        response = httpx.post(
            self._metadata["registration_endpoint"],
            json={
                "redirect_uris": [f"{origin}/bff/callback"],
                "post_logout_redirect_uris": [f"{origin}/"],
                "backchannel_logout_uri": f"{origin}/bff/backchannel-logout",
                "backchannel_logout_session_required": True,
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "client_secret_basic",
                "scope": "openid profile email offline_access api:read",
            },
            timeout=10,
        )
        assert response.status_code == 201, response.text
        return Registration(response.json()["client_id"], response.json()["client_secret"])

    def events(self, client: Registration) -> list[dict[str, Any]]:
        """What the provider did for ``client``: ``grant.success`` (with its ``grant_type``), ``grant.revoked``,
        ``grant.error``, ``end_session.success``, ``backchannel.success``/``backchannel.error``."""
        everything: list[dict[str, Any]] = httpx.get(f"{self.issuer}/_test/events", timeout=10).json()["events"]
        return [e for e in everything if e["client_id"] == client.client_id]

    async def refreshes(self, client: Registration) -> int:
        return sum(
            1 for e in self.events(client) if e["event"] == "grant.success" and e["grant_type"] == "refresh_token"
        )

    async def reuse_detected(self, client: Registration) -> bool:
        return any(e["event"] == "grant.revoked" for e in self.events(client))

    async def revoked(self, client: Registration, refresh_token: str) -> bool:
        return self.introspect(client, refresh_token)["active"] is False

    def introspect(self, client: Registration, token: str) -> dict[str, Any]:
        """RFC 7662, with the client's credentials."""
        response = httpx.post(
            self._metadata["introspection_endpoint"],
            data={"token": token},
            auth=(client.client_id, client.client_secret),
            timeout=10,
        )
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    async def sign_in(self, browser: Browser, bff_url: str, login: str = "alice") -> list[httpx.Response]:
        """bff's login through the provider: its login form (any password), then its consent page; every hop."""
        hops = await browser.follow(f"{bff_url}/bff/login")
        for _ in range(3):  # login, consent, and at most one more interaction the provider asks for
            page = hops[-1]
            if page.status_code != 200 or 'name="prompt"' not in page.text:
                return hops
            fields = {"login": login, "password": "any"} if 'value="login"' in page.text else {}
            hops += await submit_form(browser, page, **fields)
        return hops

    def showed_login_form(self, hops: list[httpx.Response]) -> bool:
        return any('name="prompt" value="login"' in hop.text for hop in hops)

    async def confirm_logout(self, browser: Browser, hops: list[httpx.Response]) -> list[httpx.Response]:
        # It asks even with an id_token_hint; the confirmation is its own CSRF-protected form.
        return hops + await submit_form(browser, hops[-1], logout="yes")

    async def log_out_at_the_provider(self, browser: Browser) -> None:
        confirm = await browser.request("GET", self._metadata["end_session_endpoint"])
        assert confirm.status_code == 200, confirm.text
        await submit_form(browser, confirm, logout="yes")


@contextlib.contextmanager
def running_oidc_provider(**env: str) -> Iterator[NodeOP]:
    """Start ``node provider.mjs`` (``env``: e.g. ``OP_ACCESS_TOKEN_TTL``); stopped at the end."""
    node, _ = require_node()
    directory = install_oidc_provider()
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed below, after the process is gone
    process = subprocess.Popen(
        [node, "provider.mjs"], cwd=directory, stdout=subprocess.PIPE, stderr=log, env={**os.environ, **env}, text=True
    )
    try:
        line = _first_line(process, timeout=30)
        if not line:
            log.seek(0)
            pytest.fail(f"oidc-provider did not start ({process.poll()}):\n{log.read().decode()[-3000:]}")
        yield NodeOP(json.loads(line)["issuer"])
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.communicate(timeout=10)
        process.kill()  # nothing happens when it has exited already
        process.communicate()
        log.close()


def _first_line(process: subprocess.Popen[str], *, timeout: float) -> str:
    """The provider's first line of output (its issuer), or "" when it exits or stays silent for ``timeout``."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline() if process.stdout else ""))
    reader.daemon = True
    reader.start()
    deadline = time.monotonic() + timeout
    while reader.is_alive() and time.monotonic() < deadline:
        reader.join(0.05)
    return lines[0].strip() if lines else ""
