"""An OpenID Provider as the interoperability tests see it, whoever wrote it: the reference IdP of ``devtools/``
(:class:`DevIdpOP`) or panva's oidc-provider (``tests.support.node_oidc_provider.NodeOP``).

A test registers a client for its bff, signs in through the provider's own pages, and asks the provider what it
did (refreshes, revocations, reuse detection) in the provider's own terms, so its assertions hold for both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode, urljoin

import httpx

from bff_devtools.devidp import ClientRegistration
from tests.support.browser import Browser
from tests.support.devidp import FORM, IdP, OAuthClient, running_devidp, sign_in_through_form


@dataclass(frozen=True)
class Registration:
    client_id: str
    client_secret: str


class OP(Protocol):
    @property
    def issuer(self) -> str:
        """Known once a client is registered (the reference IdP starts then)."""
        ...

    #: The ``aud`` of its access tokens for the test API.
    audience: str
    #: What bff's ``[oidc]`` table needs for this provider besides issuer and client.
    oidc_settings: Mapping[str, Any]
    #: The ``sub`` and ``name`` of the user who signs in.
    user: tuple[str, str]
    #: Whether detecting refresh-token reuse sends back-channel logout (else bff sees it at its next refresh).
    logs_out_on_reuse: bool

    def register(self, origin: str) -> Registration:
        """A confidential client (client_secret_basic) for the bff at ``origin``: its callback, ``/`` after logout,
        its back-channel logout endpoint."""
        ...

    def metadata(self) -> Mapping[str, Any]: ...

    async def sign_in(self, browser: Browser, bff_url: str) -> list[httpx.Response]:
        """bff's login through the provider's pages; every hop."""
        ...

    def showed_login_form(self, hops: list[httpx.Response]) -> bool: ...

    async def refreshes(self, client: Registration) -> int:
        """Refresh-token grants the provider answered for ``client``."""
        ...

    async def reuse_detected(self, client: Registration) -> bool:
        """Whether the provider saw a spent refresh token again (and revoked the grant)."""
        ...

    async def revoked(self, client: Registration, refresh_token: str) -> bool:
        """Whether ``refresh_token`` (the latest of its grant) was revoked."""
        ...

    async def confirm_logout(self, browser: Browser, hops: list[httpx.Response]) -> list[httpx.Response]:
        """After a redirect to the end-session endpoint: the provider's confirmation, if it asks; every hop."""
        ...

    async def log_out_at_the_provider(self, browser: Browser) -> None:
        """The person logs out at the provider itself (no bff involved); its back-channel logout follows."""
        ...


class _FirstForm(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self._done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form" and self.action is None:
            self.action = values.get("action", "")
        elif tag == "input" and self.action is not None and not self._done and values.get("type") == "hidden":
            self.fields[values.get("name", "")] = values.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self.action is not None:
            self._done = True


async def submit_form(browser: Browser, page: httpx.Response, **fields: str) -> list[httpx.Response]:
    """Post the page's first form (its hidden inputs and ``fields``) as a browser would; follow the redirects."""
    form = _FirstForm()
    form.feed(page.text)
    assert form.action is not None, f"no form in the page (HTTP {page.status_code}): {page.text[:500]}"
    url = urljoin(str(page.url), form.action)
    posted = await browser.request("POST", url, headers=FORM, content=urlencode(form.fields | fields).encode())
    hops = [posted]
    if posted.status_code in (302, 303):
        hops += await browser.follow(urljoin(url, posted.headers["location"]))
    return hops


@dataclass
class DevIdpOP:
    """The reference IdP; it knows its clients from the start, so :meth:`register` starts it (one per test)."""

    data_dir: Path
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    audience: str = "demo-api"
    oidc_settings: Mapping[str, Any] = field(default_factory=dict)
    user: tuple[str, str] = ("alice-0001", "Alice Example")
    logs_out_on_reuse: bool = True
    idp: IdP | None = None
    admin: Browser | None = None
    origin: str = ""

    @property
    def issuer(self) -> str:
        assert self.idp is not None, "no client registered yet"
        return self.idp.url

    def register(self, origin: str) -> Registration:
        registration = Registration("interop-bff", "interop-bff-client-secret-0123456789")
        client = ClientRegistration(
            registration.client_id,
            registration.client_secret,
            redirect_uris=(f"{origin}/bff/callback",),
            post_logout_redirect_uris=(f"{origin}/",),
            backchannel_logout_uri=f"{origin}/bff/backchannel-logout",
        )
        # A DPoP proof at its token endpoint must carry a nonce of its own (RFC 9449 8), like oidc-provider's here.
        self.idp = self.stack.enter_context(running_devidp(self.data_dir, (client,), dpop_nonce=True))
        self.origin = origin
        return registration

    def metadata(self) -> Mapping[str, Any]:
        document: dict[str, Any] = httpx.get(f"{self.issuer}/.well-known/openid-configuration", timeout=10).json()
        return document

    async def sign_in(self, browser: Browser, bff_url: str) -> list[httpx.Response]:
        return await sign_in_through_form(browser, bff_url)

    def showed_login_form(self, hops: list[httpx.Response]) -> bool:
        return any("name='tx'" in hop.text for hop in hops)

    async def _families(self, client: Registration) -> list[dict[str, Any]]:
        """alice's token families of ``client``, from the admin API, through an admin session of the test's own."""
        assert self.idp is not None
        if self.admin is None:
            self.admin = Browser()
            admin = OAuthClient(
                self.idp,
                self.admin,
                client_id=client.client_id,
                secret=client.client_secret,
                redirect_uri=f"{self.origin}/bff/callback",
            )
            await admin.authorize()  # an IdP session, and no tokens: the families stay bff's
            await admin.aclose()
        response = await self.admin.request("GET", f"{self.issuer}/admin/api/users/alice/families")
        assert response.status_code == 200, response.text
        return [f for f in response.json()["families"] if f["client_id"] == client.client_id]

    async def refreshes(self, client: Registration) -> int:
        return sum(int(f["rotations"]) for f in await self._families(client))

    async def reuse_detected(self, client: Registration) -> bool:
        return any(f["revoked_reason"] == "reuse_detected" for f in await self._families(client))

    async def revoked(self, client: Registration, refresh_token: str) -> bool:
        # The admin API shows families, not tokens: bff's session has the only one, revoked through RFC 7009.
        return [f["revoked_reason"] for f in await self._families(client)] == ["revoked_by_client"]

    async def confirm_logout(self, browser: Browser, hops: list[httpx.Response]) -> list[httpx.Response]:
        return hops  # with bff's id_token_hint it logs out at once (RP-Initiated Logout 1.0 section 2)

    async def log_out_at_the_provider(self, browser: Browser) -> None:
        confirm = await browser.request("GET", f"{self.issuer}/end_session")
        await submit_form(browser, confirm)

    async def aclose(self) -> None:
        if self.admin is not None:
            await self.admin.aclose()
        self.stack.close()
