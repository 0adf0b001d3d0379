"""Two frontends on one ``bff serve``, one Redis, two reference IdPs (different issuers), real HTTP on loopback.

Frontend ``a`` is ``http://127.0.0.1:PORT`` (IdP 1, upstream 1), frontend ``b`` is ``http://localhost:PORT`` (IdP 2,
upstream 2), both selected by host, and ``c`` is ``/c`` on ``127.0.0.1`` (path prefix, IdP 1). The same user logs
in to each; nothing one frontend issued works at another (docs/frontends.md).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bff.cli import main
from tests.support.bff_process import running_bff
from tests.support.browser import Browser
from tests.support.configs import SESSION_KEY
from tests.support.devidp import CLIENT_SECRET, FORM, IdP, client, login_tx, running_devidp
from tests.support.echo_upstream import EchoState, EchoUpstream
from tests.support.leak_guard import GUARD
from tests.support.servers import free_port, serve

XHR = {"X-CSRF": "1"}


@dataclass(frozen=True)
class World:
    a: str
    b: str
    c: str
    idp1: IdP
    idp2: IdP
    upstream1: EchoState
    upstream2: EchoState
    redis_url: str
    config: Path


def frontend(name: str, origin: str, idp: IdP, upstream: str, *, host: str = "", prefix: str = "") -> str:
    selector = f'host = "{host}"\n' if host else ""
    selector += f'path_prefix = "{prefix}"' if prefix else ""
    return f"""
[[frontends]]
name = "{name}"
public_origin = "{origin}"
cookie_name = "__Host-{name}"
{selector}
[frontends.oidc]
issuer = "{idp.url}"
client_id = "spa-bff"
client_secret = "{CLIENT_SECRET}"
[[frontends.routes]]
path = "/api"
upstream = "{upstream}"
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("frontends")
    port = free_port()
    a, b = f"http://127.0.0.1:{port}", f"http://localhost:{port}"
    c = f"{a}/c"
    reg_a = client(redirect_uri=f"{a}/bff/callback", post_logout_redirect_uri=f"{a}/")
    reg_b = client(
        redirect_uri=f"{b}/bff/callback",
        post_logout_redirect_uri=f"{b}/",
        backchannel_logout_uri=f"{b}/bff/backchannel-logout",
    )
    reg_c = client("spa-bff-c", redirect_uri=f"{c}/bff/callback", post_logout_redirect_uri=f"{c}/")
    state1, state2 = EchoState(), EchoState()
    with (
        running_devidp(tmp / "idp1", (reg_a, reg_c)) as idp1,
        running_devidp(tmp / "idp2", (reg_b,)) as idp2,
        serve(EchoUpstream(state1)) as upstream1,
        serve(EchoUpstream(state2)) as upstream2,
    ):
        config = tmp / "bff.toml"
        config.write_text(
            f'[server]\nlisten = "127.0.0.1:{port}"\ndrain_delay = "0s"\nshutdown_timeout = "2s"\n'
            f'[session]\nstore = "{redis_url}"\nkeys = ["{SESSION_KEY}"]\n'
            + frontend("a", a, idp1, upstream1, host=f"127.0.0.1:{port}")
            + frontend("b", b, idp2, upstream2, host=f"localhost:{port}")
            + frontend("c", a, idp1, upstream1, host=f"127.0.0.1:{port}", prefix="/c").replace(
                'client_id = "spa-bff"', 'client_id = "spa-bff-c"'
            )
        )
        GUARD.watch_bff(b)  # frontend b's answers are scanned for tokens too (start_bff watches 127.0.0.1)
        with running_bff(config, port, tmp / "bff.log"):
            yield World(a, b, c, idp1, idp2, state1, state2, redis_url, config)


async def sign_in(browser: Browser, origin: str, idp: IdP) -> str:
    """Log in at ``origin`` (a frontend's base URL) through ``idp``'s form; returns the frontend's cookie value."""
    hops = await browser.follow(f"{origin}/bff/login")
    assert "name='tx'" in hops[-1].text, hops[-1].text
    body = f"tx={login_tx(hops[-1])}&username=alice&password=wonderland".encode()
    submitted = await browser.request("POST", f"{idp.url}/login", headers=FORM, content=body)
    assert submitted.status_code == 302, submitted.text
    assert submitted.headers["location"].startswith(f"{origin}/bff/callback?")
    hops = await browser.follow(submitted.headers["location"])
    assert hops[0].headers["location"] == f"{origin}/"  # back to the frontend's own root (its prefix's, for c)
    user = await browser.request("GET", f"{origin}/bff/user", headers=XHR)
    assert user.status_code == 200, user.text
    name = "__Host-" + ("c" if origin.endswith("/c") else "b" if "localhost" in origin else "a")
    return browser.cookies(origin)[name]


async def user_with(browser: Browser, origin: str, cookie: str) -> tuple[int, str]:
    response = await browser.http.get(f"{origin}/bff/user", headers={**XHR, "cookie": cookie})
    return response.status_code, response.json().get("error", "")


async def test_each_frontend_logs_in_at_its_own_idp_and_proxies_to_its_own_upstream(
    world: World, browser: Browser
) -> None:
    await sign_in(browser, world.a, world.idp1)
    await sign_in(browser, world.b, world.idp2)
    for origin, mine, other in (
        (world.a, world.upstream1, world.upstream2),
        (world.b, world.upstream2, world.upstream1),
    ):
        mine.reset()
        other.reset()
        response = await browser.request("GET", f"{origin}/api/orders", headers=XHR)
        assert response.status_code == 200, response.text
        assert [s.raw_path for s in mine.seen] == ["/orders"]
        assert mine.seen[0].authorization is not None
        assert other.seen == []  # a route of one frontend never reaches the other's upstream


async def test_a_cookie_of_one_frontend_is_refused_by_another_even_renamed(world: World, browser: Browser) -> None:
    value = await sign_in(browser, world.a, world.idp1)
    assert await user_with(browser, world.a, f"__Host-a={value}") == (200, "")
    assert await user_with(browser, world.b, f"__Host-a={value}") == (401, "unauthenticated")
    # Same key ring, same Redis: renamed to b's cookie, the signature (bound to frontend a) does not verify at b.
    assert await user_with(browser, world.b, f"__Host-b={value}") == (401, "unauthenticated")
    assert await user_with(browser, world.c, f"__Host-c={value}") == (401, "unauthenticated")
    # Through b's proxy neither: the route answers 401 and upstream 2 sees nothing.
    world.upstream2.reset()
    proxied = await browser.http.get(f"{world.b}/api/x", headers={**XHR, "cookie": f"__Host-b={value}"})
    assert proxied.status_code == 401
    assert world.upstream2.seen == []


async def test_a_path_prefixed_frontend_has_its_own_login_and_cookie(world: World, browser: Browser) -> None:
    value = await sign_in(browser, world.c, world.idp1)
    assert await user_with(browser, world.a, f"__Host-a={value}") == (401, "unauthenticated")
    user = await browser.request("GET", f"{world.c}/bff/user", headers=XHR)
    assert user.json()["logout_url"].startswith("/c/bff/logout?sid=")
    world.upstream1.reset()
    assert (await browser.request("GET", f"{world.c}/api/v", headers=XHR)).status_code == 200
    assert [s.raw_path for s in world.upstream1.seen] == ["/v"]


async def test_unknown_hosts_and_paths_get_unknown_frontend(world: World, browser: Browser) -> None:
    port = world.a.rsplit(":", 1)[1]
    response = await browser.http.get(f"{world.a}/bff/user", headers={**XHR, "host": f"evil.example:{port}"})
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_frontend"
    ready = await browser.http.get(f"{world.a}/readyz", headers={"host": "10.0.0.7:8000"})
    assert ready.status_code == 200  # health checks are the process's, for any host
    assert set(ready.json()["checks"]) == {"store", "idp:a", "idp:b", "idp:c"}


async def test_logging_out_of_one_frontend_and_its_backchannel_logout_end_nothing_at_another(
    world: World,
) -> None:
    browser = Browser()
    try:
        value_a = await sign_in(browser, world.a, world.idp1)
        await sign_in(browser, world.b, world.idp2)  # the same user (alice) at the other IdP
        logout_url = (await browser.request("GET", f"{world.b}/bff/user", headers=XHR)).json()["logout_url"]
        hops = await browser.follow(world.b + logout_url)
        assert any(h.url.host == "127.0.0.1" and h.url.path == "/end_session" for h in hops), [h.url for h in hops]
        assert (await browser.request("GET", f"{world.b}/bff/user", headers=XHR)).status_code == 401
        # IdP 2 ended its session and told frontend b by back-channel (b kept the logout token's marker) ...
        redis = Redis.from_url(world.redis_url)
        try:
            assert [k async for k in redis.scan_iter(match="bff:fe:b:j:*")]
        finally:
            await redis.aclose()
        # ... which ended nothing of frontend a, where the same user logged in at IdP 1.
        assert await user_with(browser, world.a, f"__Host-a={value_a}") == (200, "")
    finally:
        await browser.aclose()


async def test_every_store_key_of_a_frontend_is_in_its_namespace(world: World, browser: Browser) -> None:
    await sign_in(browser, world.a, world.idp1)
    await sign_in(browser, world.b, world.idp2)
    redis = Redis.from_url(world.redis_url)
    try:
        # The store's own prefix (bff:), then the frontend's namespace; no key of this bff is outside one.
        keys = [k.decode().removeprefix("bff:") async for k in redis.scan_iter(match="bff:fe:*")]
        assert any(k.startswith("fe:a:s:") for k in keys)
        assert any(k.startswith("fe:b:s:") for k in keys)
        assert any(k.startswith("fe:a:u:") for k in keys)
        assert all(k.split(":")[1] in ("a", "b", "c") for k in keys)
    finally:
        await redis.aclose()


async def test_sessions_admin_acts_on_one_frontend(
    world: World, browser: Browser, capsys: pytest.CaptureFixture[str]
) -> None:
    value_a = await sign_in(browser, world.a, world.idp1)
    await sign_in(browser, world.b, world.idp2)
    sub = (await browser.request("GET", f"{world.b}/bff/user", headers=XHR)).json()["sub"]
    config = str(world.config)
    assert await asyncio.to_thread(main, ["sessions", "list", "--sub", sub, "--config", config]) == 2
    assert "--frontend: required (one of: a, b, c)" in capsys.readouterr().err
    args = ["sessions", "list", "--sub", sub, "--config", config, "--json", "--frontend"]
    assert await asyncio.to_thread(main, [*args, "b"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["sessions"]
    assert listed["unreadable"] == 0
    revoke = ["sessions", "revoke", "--sub", sub, "--config", config, "--frontend", "b"]
    assert await asyncio.to_thread(main, revoke) == 0
    assert (await browser.request("GET", f"{world.b}/bff/user", headers=XHR)).status_code == 401
    assert await user_with(browser, world.a, f"__Host-a={value_a}") == (200, "")  # same sub at a: untouched


async def test_doctor_checks_every_frontend_or_the_one_it_is_given(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["doctor", "--config", str(world.config), "--json", "--timeout", "5"]
    await asyncio.to_thread(main, args)
    every = json.loads(capsys.readouterr().out)
    assert {c["frontend"] for c in every["checks"]} == {"a", "b", "c", None}
    issuers = {c["frontend"]: c["message"] for c in every["checks"] if c["id"] == "idp.discovery.issuer"}
    for name, idp in (("a", world.idp1), ("b", world.idp2), ("c", world.idp1)):
        assert idp.url in issuers[name], issuers
    await asyncio.to_thread(main, [*args, "--frontend", "b"])
    report = capsys.readouterr().out
    assert world.idp2.url in report
    assert world.idp1.url not in report
