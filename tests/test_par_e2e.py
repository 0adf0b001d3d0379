"""PAR (RFC 9126) and signed request objects (RFC 9101) end to end: bff and the reference IdP as real servers on
loopback. The login is pushed whenever the IdP offers PAR, the browser's URL at the IdP then carries only
``client_id`` and a ``request_uri`` that works once; request objects are signed with the ``private_key_jwt`` key and
verified by the IdP. The FAPI 2.0 profile is in ``tests/test_fapi2_e2e.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from bff.app import BffApp
from bff.errors import ConfigError
from bff.session.memory_store import MemoryStore
from tests.support.browser import Browser
from tests.support.configs import make_config
from tests.support.par_world import CLIENT_ID, jwt_parts, logged_in, query, running_world
from tests.support.servers import serve


async def test_the_login_is_pushed_and_the_browser_carries_only_the_request_uri(
    tmp_path: Path, browser: Browser
) -> None:
    with running_world(tmp_path) as world:
        hops = await logged_in(browser, world)
        to_idp = hops[0].headers["location"]
        assert set(query(to_idp)) == {"client_id", "request_uri"}, "no scope, redirect_uri, state or PKCE in the URL"
        assert query(to_idp)["request_uri"].startswith("urn:ietf:params:oauth:request_uri:")
        assert world.transport.paths() == ["/par", "/token"]
        pushed = world.transport.posts[0][1]
        assert (pushed["response_type"], pushed["code_challenge_method"]) == ("code", "S256")

        # RFC 9126 4: the request_uri works once; the same link again is refused by the IdP.
        again = await browser.request("GET", to_idp)
        assert again.status_code == 400
        assert "invalid_request_uri" in again.text


async def test_par_off_sends_the_parameters_in_the_url(tmp_path: Path, browser: Browser) -> None:
    with running_world(tmp_path, oidc={"par": "off"}) as world:
        hops = await logged_in(browser, world)
        assert {"scope", "state", "code_challenge", "redirect_uri"} <= set(query(hops[0].headers["location"]))
        assert world.transport.paths() == ["/token"]


async def test_an_idp_without_par_gets_plain_requests_under_auto(tmp_path: Path, browser: Browser) -> None:
    with running_world(tmp_path, idp={"par": False}) as world:
        hops = await logged_in(browser, world)
        assert "request_uri" not in query(hops[0].headers["location"])


async def test_an_idp_that_requires_par_refuses_a_plain_request(tmp_path: Path, browser: Browser) -> None:
    with running_world(tmp_path, idp={"require_pushed_authorization_requests": True}) as world:
        await logged_in(browser, world)  # bff pushes (par = "auto")
        plain = (
            world.idp.url
            + "/authorize?"
            + "&".join(
                f"{k}={v}"
                for k, v in {
                    "client_id": CLIENT_ID,
                    "response_type": "code",
                    "scope": "openid",
                    "redirect_uri": f"{world.bff}/bff/callback",
                }.items()
            )
        )
        refused = await browser.request("GET", plain)
        assert refused.status_code == 400
        assert "pushed authorization requests only" in refused.text


async def test_a_failed_push_is_a_clear_error_and_sets_no_login_cookie(tmp_path: Path, browser: Browser) -> None:
    # The IdP registers another redirect URI than bff sends: the push is refused with invalid_request.
    with running_world(tmp_path) as world:
        doc = dict(world.doc)
        doc["oidc"] = {**doc["oidc"], "redirect_uri": f"{world.bff}/bff/other-callback"}
        app = BffApp(make_config(doc), store=MemoryStore())
        with serve(app) as url:
            answer = await browser.request("GET", f"{url}/bff/login")
        assert answer.status_code == 502
        assert "error: idp_par_failed" in answer.text, "a page naming the error, for a top-level navigation"
        assert not [h for h in answer.headers.get_list("set-cookie") if "-login-" in h], "no login was started"


async def test_signed_request_objects_inside_the_push(tmp_path: Path, browser: Browser) -> None:
    with running_world(tmp_path, idp={"require_signed_request_object": True}, signed=True) as world:
        await logged_in(browser, world)
        path, pushed = world.transport.posts[0]
        assert path == "/par"
        assert set(pushed) == {"client_id", "request", "client_assertion", "client_assertion_type"}
        header, claims = jwt_parts(pushed["request"])
        assert (header["typ"], header["alg"]) == ("oauth-authz-req+jwt", "ES256")
        assert (claims["iss"], claims["client_id"], claims["aud"]) == (CLIENT_ID, CLIENT_ID, world.idp.url)
        assert claims["exp"] - claims["nbf"] <= 300
        assert claims["jti"]
        assert claims["code_challenge_method"] == "S256"
        assert "dpop_jkt" not in claims, "dpop is off"
        # Outside profile = "fapi2", the assertion's audience is the token endpoint (some IdPs refuse the issuer).
        assert jwt_parts(pushed["client_assertion"])[1]["aud"] == f"{world.idp.url}/token"


async def test_two_logins_in_a_row_each_with_fresh_jtis(tmp_path: Path, browser: Browser) -> None:
    """The reference IdP refuses a replayed request object or client assertion (``tests/devidp/test_replay.py``):
    bff's second full login (another browser, the IdP's form again) works, since every JWT it signs is new."""
    with running_world(tmp_path, idp={"require_signed_request_object": True}, signed=True) as world:
        await logged_in(browser, world)
        second = Browser()
        try:
            await logged_in(second, world)
        finally:
            await second.aclose()
        assert world.transport.paths() == ["/par", "/token", "/par", "/token"]
        objects = [jwt_parts(form["request"])[1] for _, form in world.transport.posts if "request" in form]
        assertions = [jwt_parts(form["client_assertion"])[1] for _, form in world.transport.posts]
        assert len({claims["jti"] for claims in objects + assertions}) == 6
        assert all(claims["exp"] - claims["iat"] <= 60 for claims in assertions), "short-lived (RFC 7523 3)"


async def test_signed_request_objects_without_par(tmp_path: Path, browser: Browser) -> None:
    idp = {"par": False, "require_signed_request_object": True}
    with running_world(tmp_path, idp=idp, signed=True) as world:
        hops = await logged_in(browser, world)
        sent = query(hops[0].headers["location"])
        assert set(sent) == {"client_id", "request", "response_type", "scope"}
        assert "state" not in sent, "the parameters travel inside the signed object only"


async def test_an_idp_requiring_request_objects_is_refused_without_a_key(tmp_path: Path) -> None:
    with running_world(tmp_path, idp={"require_signed_request_object": True}, start_bff=False) as world:
        app = BffApp(make_config(world.doc), store=MemoryStore())
        with pytest.raises(ConfigError, match="requires signed request objects"):
            async with app.lifespan():
                pass
