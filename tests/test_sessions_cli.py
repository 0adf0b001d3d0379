"""``bff sessions list|revoke``: an operator lists a user's sessions and logs the user out everywhere, on the shared
Redis, across bff instances, against the real test OpenID Provider over HTTP."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from bff.app import BffApp
from bff.cli import main
from bff.idp_http import create_idp_client
from bff.models import TokenSet
from bff.oidc.provider import IdentityProvider
from bff.session.manager import SessionManager
from bff.session.memory_store import MemoryStore
from bff.session.redis_store import RedisStore
from bff.sessions_admin import list_sessions, revoke_sessions
from bff.types import JSONObject
from tests.support.browser import Browser
from tests.support.clock import FakeClock
from tests.support.configs import base_document, make_config
from tests.support.oidc_provider import TestProvider
from tests.support.servers import serve
from tests.support.stack import bound_socket

XHR = {"X-CSRF": "1"}


@pytest.fixture
def provider() -> Iterator[TestProvider]:
    """The IdP, with two users whose ``sub`` is new for each test (the instances share Redis without a test prefix:
    the production key layout, as the CLI sees it)."""
    provider = TestProvider()
    suffix = uuid4().hex[:12]
    provider.users["carol"] = {"sub": f"carol-{suffix}", "name": "Carol Example"}
    provider.users["dave"] = {"sub": f"dave-{suffix}", "name": "Dave Example"}
    with serve(provider.app) as idp_url:
        provider.issuer = idp_url
        yield provider


def document(provider: TestProvider, public_origin: str, store: str) -> dict[str, Any]:
    doc = base_document(public_origin=public_origin, issuer=provider.issuer, store=store)
    doc["oidc"]["client_secret"] = provider.client_secret or ""
    doc["routes"] = []
    return doc


@contextlib.contextmanager
def instance(provider: TestProvider, redis_url: str) -> Iterator[str]:
    """One bff instance on the shared Redis with the shared key ring, as deployed (no test key prefix)."""
    sock = bound_socket()
    app = BffApp(make_config(document(provider, f"http://127.0.0.1:{sock.getsockname()[1]}", redis_url)))
    with serve(app, sock=sock) as url:
        yield url


def write_config(tmp_path: Path, doc: dict[str, Any]) -> Path:
    """``doc`` as TOML (string values and string lists suffice here; a JSON string is a valid TOML basic string)."""
    lines: list[str] = []
    for table_name in ("server", "session", "oidc"):
        lines.append(f"[{table_name}]")
        for key, value in doc[table_name].items():
            lines.append(f"{key} = {json.dumps(value)}")
    path = tmp_path / "bff.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def config_path(tmp_path: Path, provider: TestProvider, redis_url: str) -> Path:
    return write_config(tmp_path, document(provider, "http://127.0.0.1:8000", redis_url))


def claims_of(token: str) -> JSONObject:
    payload = token.split(".")[1]
    claims: JSONObject = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


async def log_in(browser: Browser, provider: TestProvider, url: str, user: str) -> dict[str, Any]:
    """Log ``user`` in at the instance ``url``; returns the IdP's token answer for this login."""
    provider.login_as = user
    hops = await browser.follow(f"{url}/bff/login")
    assert hops[-2].headers["location"] == url + "/"
    answer: dict[str, Any] = provider.token_responses[-1]
    return answer


async def status(browser: Browser, url: str) -> int:
    return (await browser.request("GET", f"{url}/bff/user", headers=XHR)).status_code


@dataclass(frozen=True)
class Login:
    """A browser logged in at the instance ``url``, and the IdP's token answer for that login."""

    browser: Browser
    url: str
    answer: dict[str, Any]

    @property
    def cookie(self) -> str:
        return self.browser.cookies(self.url)["__Host-bff"]


#: ``await log_in_carol(n)``: the logins, one per instance.
LogInCarol = Callable[[int], Awaitable[list[Login]]]


@pytest.fixture
def log_in_carol(provider: TestProvider, redis_url: str, browsers: Callable[[], Browser]) -> Iterator[LogInCarol]:
    """Starts ``n`` instances (one store, one key ring) and logs carol in once at each, each time in a browser of its
    own; the instances stop at teardown."""
    with contextlib.ExitStack() as instances:

        async def start_and_log_in(n: int) -> list[Login]:
            urls = [instances.enter_context(instance(provider, redis_url)) for _ in range(n)]
            logins = []
            for url in urls:
                browser = browsers()
                logins.append(Login(browser, url, await log_in(browser, provider, url, "carol")))
            return logins

        yield start_and_log_in


async def run_cli(*argv: str) -> int:
    """``bff ...`` as the console script runs it (``main`` calls ``asyncio.run``: off this test's loop)."""
    return await asyncio.to_thread(main, list(argv))


async def test_revoke_logs_the_user_out_on_every_instance(
    provider: TestProvider,
    config_path: Path,
    log_in_carol: LogInCarol,
    browsers: Callable[[], Browser],
    capsys: pytest.CaptureFixture[str],
) -> None:
    carol, dave = provider.users["carol"]["sub"], provider.users["dave"]["sub"]
    first, second = await log_in_carol(2)
    other_user = browsers()
    others = await log_in(other_user, provider, first.url, "dave")
    # Each instance sees the other's session: one store, one key ring.
    cross = await first.browser.http.get(
        f"{second.url}/bff/user", headers={**XHR, "cookie": f"__Host-bff={first.cookie}"}
    )
    assert cross.status_code == 200

    assert await run_cli("sessions", "revoke", "--sub", carol, "--config", str(config_path)) == 0
    out, err = capsys.readouterr()
    assert out == f"revoked 2 session(s) of {carol} (2 refresh token(s) revoked at the identity provider)\n"
    assert err == ""

    assert await status(first.browser, first.url) == 401
    assert await status(second.browser, second.url) == 401
    assert await status(other_user, first.url) == 200
    assert set(provider.revoked_tokens) == {first.answer["refresh_token"], second.answer["refresh_token"]}
    assert others["refresh_token"] not in provider.revoked_tokens

    assert await run_cli("sessions", "list", "--sub", carol, "--config", str(config_path), "--json") == 0
    assert json.loads(capsys.readouterr().out)["sessions"] == []
    assert await run_cli("sessions", "revoke", "--sub", carol, "--config", str(config_path)) == 0
    assert capsys.readouterr().out.startswith("revoked 0 session(s)")
    # Clean up the other user's session (the instances use the shared, unprefixed key layout).
    assert await run_cli("sessions", "revoke", "--sub", dave, "--config", str(config_path)) == 0
    assert await status(other_user, first.url) == 401


async def test_list_shows_each_session_and_never_a_token(
    provider: TestProvider, config_path: Path, log_in_carol: LogInCarol, capsys: pytest.CaptureFixture[str]
) -> None:
    carol = provider.users["carol"]["sub"]
    logins = await log_in_carol(2)
    first = logins[0]
    sids = {claims_of(login.answer["id_token"])["sid"] for login in logins}
    cookies = [login.cookie for login in logins]

    assert await run_cli("sessions", "list", "--sub", carol, "--config", str(config_path), "--json") == 0
    out_json, err_json = capsys.readouterr()
    assert await run_cli("sessions", "list", "--sub", carol, "--config", str(config_path)) == 0
    out_text, err_text = capsys.readouterr()

    listing = json.loads(out_json)
    assert listing["sub"] == carol
    assert listing["last_seen_is_approximate"] is True
    sessions = listing["sessions"]
    assert len(sessions) == 2
    assert {s["sid"] for s in sessions} == sids
    assert len({s["handle"] for s in sessions}) == 2
    for s in sessions:
        assert len(s["handle"]) == 12
        assert s["created_at"] <= s["last_seen"] <= s["idle_expires_at"] <= s["expires_at"]
        assert s["expires_at"] - s["created_at"] == 12 * 3600  # the default absolute timeout

    header, columns, *rows = out_text.splitlines()
    assert header.startswith(f"# 2 live session(s) of {carol}")
    assert "approximate" in header
    assert columns.split()[:2] == ["HANDLE", "CREATED"]
    assert len(rows) == 2
    assert {row.split()[0] for row in rows} == {s["handle"] for s in sessions}
    assert {row.split()[-1] for row in rows} == sids

    everything = out_json + err_json + out_text + err_text
    issued = provider.issued_tokens()
    assert len(issued) == 6  # access, refresh and ID token of each login: the check below checks something
    for secret in [*issued, *cookies, *(c.rpartition(".")[0] for c in cookies)]:
        assert secret not in everything
    assert await status(first.browser, first.url) == 200  # listing ended nothing

    assert await run_cli("sessions", "revoke", "--sub", carol, "--config", str(config_path)) == 0


async def test_listing_with_another_key_ring_says_it_cannot_read_the_sessions(
    provider: TestProvider, redis_url: str, tmp_path: Path, log_in_carol: LogInCarol, capsys: pytest.CaptureFixture[str]
) -> None:
    carol = provider.users["carol"]["sub"]
    doc = document(provider, "http://127.0.0.1:8000", redis_url)
    doc["session"]["keys"] = ["another-key-0123456789-abcdefghijklmnop"]
    other_keys = write_config(tmp_path, doc)
    [login] = await log_in_carol(1)
    assert await run_cli("sessions", "list", "--sub", carol, "--config", str(other_keys)) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"# 0 live session(s) of {carol}")
    assert "1 session record(s)" in err
    assert "session.keys" in err
    assert await status(login.browser, login.url) == 200

    assert await run_cli("sessions", "revoke", "--sub", carol, "--config", str(other_keys)) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"revoked 1 session(s) of {carol} (0 refresh token(s)")
    assert "could not be revoked" in err
    assert await status(login.browser, login.url) == 401


async def test_revocation_failures_are_reported_and_the_sessions_still_end(
    provider: TestProvider, redis_url: str, browsers: Callable[[], Browser]
) -> None:
    """``revoke_sessions`` called directly, on services built as the CLI builds them."""
    carol = provider.users["carol"]["sub"]
    config = make_config(document(provider, "http://127.0.0.1:8000", redis_url))
    with instance(provider, redis_url) as url:
        first, second = browsers(), browsers()
        await log_in(first, provider, url, "carol")
        await log_in(second, provider, url, "carol")
        provider.revocation_fails = True
        store = RedisStore.from_url(redis_url)
        http = create_idp_client()
        try:
            sessions = SessionManager(store, config.session)
            report = await revoke_sessions(sessions, IdentityProvider(config.oidc, http), carol)
            assert (report.deleted, report.revoked, report.unreadable) == (2, 0, 0)
            assert len(report.failures) == 2
            assert all("revocation failed (temporarily_unavailable)" in f for f in report.failures)
            assert (await list_sessions(sessions, carol)).sessions == []
        finally:
            await http.aclose()
            await store.aclose()
        assert await status(first, url) == 401
        assert await status(second, url) == 401


async def test_an_unreachable_idp_does_not_stop_the_logout(
    provider: TestProvider, redis_url: str, tmp_path: Path, log_in_carol: LogInCarol, capsys: pytest.CaptureFixture[str]
) -> None:
    carol = provider.users["carol"]["sub"]
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        doc = document(provider, "http://127.0.0.1:8000", redis_url)
        doc["oidc"]["issuer"] = f"http://127.0.0.1:{closed.getsockname()[1]}"
        path = write_config(tmp_path, doc)
        [login] = await log_in_carol(1)
        assert await run_cli("sessions", "revoke", "--sub", carol, "--config", str(path)) == 0
        out, err = capsys.readouterr()
        assert out.startswith(f"revoked 1 session(s) of {carol} (0 refresh token(s)")
        assert "identity provider not reachable" in err
        assert login.answer["refresh_token"] not in out + err
        assert await status(login.browser, login.url) == 401


@pytest.mark.parametrize("command", ["list", "revoke"])
async def test_the_memory_store_is_refused(tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]) -> None:
    doc = base_document(store="memory://")
    path = write_config(tmp_path, doc)
    assert await run_cli("sessions", command, "--sub", "alice-0001", "--config", str(path)) == 2
    _, err = capsys.readouterr()
    assert "memory://" in err
    assert "shared store" in err


@pytest.mark.parametrize("command", ["list", "revoke"])
async def test_an_unreachable_store_exits_1(tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        doc = base_document(store=f"redis://127.0.0.1:{closed.getsockname()[1]}/0")
        doc["session"]["store_timeout"] = "500ms"
        path = write_config(tmp_path, doc)
        assert await run_cli("sessions", command, "--sub", "alice-0001", "--config", str(path)) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("bff: ")


def test_sub_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["sessions", "revoke"])
    assert exit_info.value.code == 2
    assert "--sub" in capsys.readouterr().err


async def test_last_seen_is_derived_from_the_sliding_ttl(fake_clock: FakeClock, memory_store: MemoryStore) -> None:
    settings = make_config().session
    sessions = SessionManager(memory_store, settings, clock=fake_clock)
    created = fake_clock()
    tokens = TokenSet(access_token="at", refresh_token="rt")
    session_id, _ = await sessions.create(sub="erin", sid="idp-sid-1", claims={}, tokens=tokens)
    fake_clock.advance(100)
    assert await sessions.load(session_id) is not None  # a request: slides the TTL, does not rewrite the record
    fake_clock.advance(50)
    ttl_before = await memory_store.ttl(sessions.key_for(session_id))

    listing = await list_sessions(sessions, "erin")
    [info] = listing.sessions
    assert info.created_at == created
    assert info.last_seen == pytest.approx(created + 100, abs=0.01)
    assert info.idle_expires_at == pytest.approx(created + 100 + settings.idle_timeout, abs=0.01)
    assert info.expires_at == created + settings.absolute_timeout
    assert info.sid == "idp-sid-1"
    assert info.handle == sessions.key_for(session_id).rpartition(":")[2][:12]
    assert await memory_store.ttl(sessions.key_for(session_id)) == ttl_before  # listing does not slide


async def test_a_session_in_a_newer_store_format_is_listed_as_unreadable_and_revoked(
    fake_clock: FakeClock, memory_store: MemoryStore
) -> None:
    """``bff sessions`` of an older release over a record a newer one wrote: counted, never shown, deleted on
    revoke (log out everywhere must not leave it behind)."""
    sessions = SessionManager(memory_store, make_config().session, clock=fake_clock)
    tokens = TokenSet(access_token="at")  # no refresh token: nothing to revoke at an IdP
    kept, _ = await sessions.create(sub="frank", sid=None, claims={}, tokens=tokens)
    newer, _ = await sessions.create(sub="frank", sid=None, claims={}, tokens=tokens)
    key = sessions.key_for(newer)
    await memory_store.set(key, sessions._sessions.encrypt(b"\x03a newer format", key.encode()), 600)

    listing = await list_sessions(sessions, "frank")
    assert [s.handle for s in listing.sessions] == [sessions.handle_for(sessions.key_for(kept))]
    assert listing.unreadable == 1
    http = create_idp_client()
    try:
        report = await revoke_sessions(sessions, IdentityProvider(make_config().oidc, http), "frank")
    finally:
        await http.aclose()
    assert (report.deleted, report.unreadable) == (1, 1)
    assert await memory_store.get(key) is None
