"""Step-up (RFC 9470) through the whole demo over HTTP: the demo API asks for a second factor, bff tells the SPA to
log in again, the reference IdP asks for the code, and the new session's token passes; a step-up that comes back
with another acr than asked for is refused and the session stays."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urljoin

import httpx
import pytest

from bff_devtools.acr import ACR_MFA, ACR_PWD, DEMO_OTP
from tests.support.browser import Browser
from tests.support.demo_stack import Demo, running_demo
from tests.support.devidp import FORM, login_tx

XHR = {"X-CSRF": "1"}
ACTION = "/api/admin/actions"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    with running_demo(Path(tmp_path_factory.mktemp("devidp")), access_token_ttl=60) as demo:
        yield demo


async def sign_in(browser: Browser, demo: Demo, url: str, *, otp: str | None = None) -> list[httpx.Response]:
    """Navigate to ``url`` (a bff login), fill in the IdP's form as alice, and follow the redirects back."""
    hops = await browser.follow(url)
    form = hops[-1]
    assert form.status_code == 200, form.text
    fields = {"tx": login_tx(form), "username": "alice", "password": "wonderland"}
    if otp is not None:
        assert "name=otp" in form.text
        fields["otp"] = otp
    answer = await browser.request("POST", f"{demo.idp_url}/login", headers=FORM, content=urlencode(fields).encode())
    if answer.status_code not in (302, 303):
        return [*hops, answer]
    return [*hops, answer, *await browser.follow(urljoin(demo.idp_url, answer.headers["location"]))]


async def me(browser: Browser, demo: Demo) -> dict[str, object]:
    response = await browser.get(f"{demo.url}/bff/user", headers=XHR)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def test_admin_action_steps_up_to_a_second_factor(demo: Demo) -> None:
    browser = Browser()
    await sign_in(browser, demo, f"{demo.url}/bff/login")
    assert (await me(browser, demo))["acr"] == ACR_PWD
    first = await browser.request("POST", demo.url + ACTION, headers=XHR)
    assert first.status_code == 401
    body = first.json()
    assert body["error"] == "step_up_required"
    assert (body["acr_values"], body["max_age"]) == (ACR_MFA, 300)
    assert body["login_url"] == f"/bff/login?acr_values={ACR_MFA}&max_age=300"
    old_cookie = browser.cookies(demo.url)["__Host-bff"]

    # A wrong code is refused at the IdP; nothing changes at bff.
    wrong = await sign_in(browser, demo, demo.url + body["login_url"] + "&returnTo=/", otp="000000")
    assert wrong[-1].status_code == 401
    assert "Wrong one-time code" in wrong[-1].text
    assert browser.cookies(demo.url)["__Host-bff"] == old_cookie

    hops = await sign_in(browser, demo, demo.url + body["login_url"] + "&returnTo=/", otp=DEMO_OTP)
    assert hops[-1].url == f"{demo.url}/"
    assert browser.cookies(demo.url)["__Host-bff"] != old_cookie  # a new session id
    user = await me(browser, demo)
    assert (user["sub"], user["acr"]) == ("alice-0001", ACR_MFA)
    done = await browser.request("POST", demo.url + ACTION, headers=XHR)
    assert done.status_code == 200, done.text
    assert done.json()["acr"] == ACR_MFA

    # The IdP answers a login that asks for pwd with its mfa session: not what was asked, so refused (fail closed),
    # and the session with the second factor stays.
    kept = browser.cookies(demo.url)["__Host-bff"]
    refused = await browser.follow(f"{demo.url}/bff/login?acr_values={ACR_PWD}")
    assert refused[-1].status_code == 400
    assert "error: step_up_failed" in refused[-1].text
    assert browser.cookies(demo.url)["__Host-bff"] == kept
    assert (await browser.request("POST", demo.url + ACTION, headers=XHR)).status_code == 200
    await browser.aclose()
