"""The development IdP (``bff_devtools.devidp``) as a real server on loopback, and what tests need around it.

* :func:`running_devidp` serves an IdP whose issuer is its own loopback URL (the socket is bound first, so the
  client registrations can name the port);
* :class:`OAuthClient` is a client written from the RFCs, independently of bff and of the IdP: PKCE, the login form
  (cookies by hand, redirects one hop at a time), the code exchange, refresh and revocation;
* :class:`LogoutReceiver` is a client's back-channel logout endpoint that records every logout token it gets.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit
from uuid import uuid4

import httpx
from joserfc import jwt
from joserfc.jwk import KeySet
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bff.session.store import SessionStore
from bff.types import Clock, system_clock
from bff_devtools.devidp import ClientRegistration, DevIdPSettings, create_devidp_app
from bff_devtools.devidp.settings import GrantType
from tests.support.browser import Browser
from tests.support.servers import ServerTLS, serve
from tests.support.stack import bound_socket

CLIENT_ID = "spa-bff"
CLIENT_SECRET = "devidp-test-secret-0123456789"
REDIRECT_URI = "https://app.example.com/bff/callback"
POST_LOGOUT_URI = "https://app.example.com/"
#: An RFC 8707 resource indicator the test IdPs know besides their default audience.
RESOURCE = "https://orders.example.net"
FORM = {"content-type": "application/x-www-form-urlencoded"}
_HIDDEN_TX = re.compile(r"name='tx' value='([^']+)'")


def client(
    client_id: str = CLIENT_ID,
    secret: str | None = CLIENT_SECRET,
    *,
    redirect_uri: str = REDIRECT_URI,
    post_logout_redirect_uri: str = POST_LOGOUT_URI,
    backchannel_logout_uri: str | None = None,
) -> ClientRegistration:
    """A client registration with the test defaults; a confidential client may also use client credentials."""
    grant_types: tuple[GrantType, ...] = ("authorization_code", "refresh_token")
    if secret is not None:
        grant_types += ("client_credentials",)
    return ClientRegistration(
        client_id=client_id,
        client_secret=secret,
        redirect_uris=(redirect_uri,),
        post_logout_redirect_uris=(post_logout_redirect_uri,),
        backchannel_logout_uri=backchannel_logout_uri,
        grant_types=grant_types,
        scope="openid profile email offline_access orders:read",
    )


@dataclass(frozen=True)
class IdP:
    url: str
    settings: DevIdPSettings


@contextlib.contextmanager
def running_devidp(
    data_dir: Path,
    clients: tuple[ClientRegistration, ...] = (),
    *,
    redis_url: str | None = None,
    store: SessionStore | None = None,
    clock: Clock = system_clock,
    tls: ServerTLS | None = None,
    **settings: Any,
) -> Iterator[IdP]:
    """Serve an IdP on loopback (memory store, or Redis under a key prefix of its own: tests share the server).
    The issuer is the server's URL unless ``issuer`` says otherwise; ``tls``: over https, client certificates
    optional (RFC 8705)."""
    sock = bound_socket()
    scheme = "https" if tls is not None else "http"
    config = DevIdPSettings(
        issuer=settings.pop("issuer", f"{scheme}://127.0.0.1:{sock.getsockname()[1]}"),
        data_dir=data_dir,
        clients=clients or (client(),),
        store_url=redis_url or "memory://",
        store_prefix=f"devidp-{uuid4().hex}:",
        **settings,
    )
    with serve(create_devidp_app(config, store=store, clock=clock), sock=sock, tls=tls) as url:
        yield IdP(url, config)


def pkce_pair() -> tuple[str, str]:
    """RFC 7636 4.1 and 4.2: a verifier and its S256 challenge."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


def unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A JWT's header and claims, read without checking anything (to look at what was sent)."""
    head, payload, _ = token.split(".")
    return _b64json(head), _b64json(payload)


def _b64json(part: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return value


def set_cookie(response: httpx.Response, name: str) -> str:
    """The ``Set-Cookie`` header for cookie ``name``."""
    found = [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
    assert len(found) == 1, f"{len(found)} Set-Cookie headers for {name}"
    return found[0]


def login_tx(page: httpx.Response) -> str:
    match = _HIDDEN_TX.search(page.text)
    assert match is not None, f"no login form in the page (HTTP {page.status_code})"
    return match.group(1)


@dataclass
class Authorization:
    """The end of an authorization request: the redirect to the client and what the client kept."""

    redirect: httpx.Response
    verifier: str
    state: str
    nonce: str
    #: The login form, when one was shown (None: single sign-on).
    form: httpx.Response | None = None

    @property
    def params(self) -> dict[str, str]:
        return query_of(self.redirect.headers["location"])


@dataclass
class OAuthClient:
    idp: IdP
    browser: Browser
    client_id: str = CLIENT_ID
    secret: str | None = CLIENT_SECRET
    redirect_uri: str = REDIRECT_URI
    http: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=10))

    async def aclose(self) -> None:
        await self.http.aclose()

    def authorize_url(self, **params: str) -> tuple[str, str, str, str]:
        """The authorization URL (Core 3.1.2.1 + PKCE), its verifier, state and nonce. ``params`` override."""
        verifier, challenge = pkce_pair()
        state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        query = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": "openid profile email offline_access",
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            **params,
        }
        return f"{self.idp.url}/authorize?{urlencode({k: v for k, v in query.items() if v})}", verifier, state, nonce

    async def submit_login(self, page: httpx.Response, username: str, password: str) -> httpx.Response:
        body = urlencode({"tx": login_tx(page), "username": username, "password": password}).encode()
        return await self.browser.request("POST", f"{self.idp.url}/login", headers=FORM, content=body)

    async def authorize(self, username: str = "alice", password: str = "wonderland", **params: str) -> Authorization:
        """Run the front channel: GET /authorize, fill in the login form if one is shown, stop at the redirect."""
        url, verifier, state, nonce = self.authorize_url(**params)
        first = await self.browser.request("GET", url)
        if first.status_code == 200:
            redirect = await self.submit_login(first, username, password)
            return Authorization(redirect, verifier, state, nonce, form=first)
        return Authorization(first, verifier, state, nonce)

    async def token(self, form: dict[str, str], *, auth: str = "basic") -> httpx.Response:
        """A token request with client_secret_basic (RFC 6749 2.3.1: form-encoded before base64) or _post."""
        headers = {}
        if self.secret is not None and auth == "basic":
            pair = f"{self.client_id}:{self.secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        elif self.secret is not None:
            form = {**form, "client_id": self.client_id, "client_secret": self.secret}
        else:
            form = {**form, "client_id": self.client_id}
        return await self.http.post(f"{self.idp.url}/token", data=form, headers=headers)

    async def exchange(self, authorization: Authorization, **extra: str) -> httpx.Response:
        form = {
            "grant_type": "authorization_code",
            "code": authorization.params["code"],
            "redirect_uri": self.redirect_uri,
            "code_verifier": authorization.verifier,
            **extra,
        }
        return await self.token(form)

    async def login(self, username: str = "alice", password: str = "wonderland") -> dict[str, Any]:
        """Front channel and code exchange in one: the token response's JSON."""
        authorization = await self.authorize(username, password)
        response = await self.exchange(authorization)
        assert response.status_code == 200, response.text
        tokens: dict[str, Any] = response.json()
        return tokens

    async def refresh(self, refresh_token: str, **extra: str) -> httpx.Response:
        return await self.token({"grant_type": "refresh_token", "refresh_token": refresh_token, **extra})

    async def revoke(self, token: str, hint: str | None = None) -> httpx.Response:
        form = {"token": token, **({"token_type_hint": hint} if hint else {})}
        assert self.secret is not None
        return await self.http.post(f"{self.idp.url}/revoke", data=form, auth=(self.client_id, self.secret))

    async def jwks(self) -> KeySet:
        return KeySet.import_key_set((await self.http.get(f"{self.idp.url}/jwks")).json())

    async def verify(self, token: str, *, typ: str) -> dict[str, Any]:
        """Check a JWT with the published JWKS only (what an API or an RP does); return its claims."""
        decoded = jwt.decode(token, await self.jwks(), algorithms=["ES256", "RS256"])
        assert decoded.header["typ"] == typ
        return dict(decoded.claims)

    async def blocklist(self) -> dict[str, int]:
        revoked: dict[str, int] = (await self.http.get(f"{self.idp.url}/blocklist")).json()["revoked_jtis"]
        return revoked


@dataclass
class LogoutReceiver:
    """A client's back-channel logout endpoint (``POST /backchannel``): records the logout tokens it receives."""

    tokens: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.app = Starlette(routes=[Route("/backchannel", self._receive, methods=["POST"])])

    async def _receive(self, request: Request) -> Response:
        assert request.headers["content-type"].startswith("application/x-www-form-urlencoded")
        token = dict(parse_qsl((await request.body()).decode()))["logout_token"]
        with self.lock:
            self.tokens.append(token)
        return Response(status_code=200, headers={"Cache-Control": "no-store"})


@contextlib.contextmanager
def logout_receiver() -> Iterator[tuple[LogoutReceiver, str]]:
    """A running receiver and its back-channel logout URI."""
    receiver = LogoutReceiver()
    with serve(receiver.app) as url:
        yield receiver, f"{url}/backchannel"


async def sign_in_through_form(browser: Browser, bff_url: str, password: str = "wonderland") -> list[httpx.Response]:
    """Follow bff's login through the IdP; fill in the IdP's form if it shows one. Returns every hop."""
    hops = await browser.follow(f"{bff_url}/bff/login")
    if hops[-1].status_code == 200 and "name='tx'" in hops[-1].text:
        idp_url = str(hops[-1].url).split("/authorize")[0]
        body = f"tx={login_tx(hops[-1])}&username=alice&password={password}".encode()
        submitted = await browser.request("POST", f"{idp_url}/login", headers=FORM, content=body)
        assert submitted.status_code == 302, submitted.text
        hops += [submitted, *await browser.follow(submitted.headers["location"])]
    return hops
