"""PAR, signed request objects and FAPI 2.0 end to end: the reference IdP and bff as real servers on loopback, with
bff's transport to the IdP recording every POST (``tests/test_par_e2e.py``, ``tests/test_fapi2_e2e.py``)."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from joserfc.jwk import ECKey

from bff.app import BffApp
from bff.session.memory_store import MemoryStore
from bff_devtools.devidp import ClientRegistration
from tests.support.browser import Browser
from tests.support.configs import base_document, make_config
from tests.support.devidp import IdP, running_devidp, sign_in_through_form
from tests.support.servers import serve
from tests.support.stack import bound_socket

XHR = {"X-CSRF": "1"}
SECRET = "bff-par-client-secret-0123456789"
CLIENT_ID = "bff-par"


class RecordingTransport(httpx.AsyncBaseTransport):
    """bff's transport to the IdP: the path and form of every POST (what bff pushed, never shown to the browser)."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.posts: list[tuple[str, dict[str, str]]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            await request.aread()
            self.posts.append((request.url.path, dict(parse_qsl(request.content.decode()))))
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()

    def paths(self) -> list[str]:
        return [path for path, _ in self.posts]


@dataclass
class World:
    idp: IdP
    bff: str
    transport: RecordingTransport
    doc: dict[str, Any] = field(default_factory=dict)


def client_key(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A private_key_jwt key for bff (PEM file) and its public JWK Set for the IdP's registration."""
    key = ECKey.generate_key("P-256", private=True)
    key.ensure_kid()
    path = tmp_path / "client-key.pem"
    path.write_bytes(key.as_pem(private=True))
    return path, {"keys": [key.as_dict(private=False)]}


def dpop_key(tmp_path: Path) -> Path:
    path = tmp_path / "dpop.pem"
    path.write_bytes(ECKey.generate_key("P-256", private=True).as_pem(private=True))
    return path


@contextlib.contextmanager
def running_world(
    tmp_path: Path,
    *,
    idp: dict[str, Any] | None = None,
    oidc: dict[str, Any] | None = None,
    signed: bool = False,
    start_bff: bool = True,
) -> Iterator[World]:
    """The IdP (``idp``: its settings) and bff (``oidc``: more of its ``[oidc]``); ``signed``: the client is
    registered with a public key and bff authenticates with ``private_key_jwt``. ``start_bff`` False: only the
    IdP runs, and ``doc`` is bff's configuration for it."""
    sock = bound_socket()
    origin = f"http://127.0.0.1:{sock.getsockname()[1]}"
    extra: dict[str, Any] = {}
    oidc = dict(oidc or {})
    if signed:
        key_file, jwks = client_key(tmp_path)
        extra = {"token_endpoint_auth_method": "private_key_jwt", "jwks": jwks}
        oidc.update(token_endpoint_auth_method="private_key_jwt", private_key_file=str(key_file))
    registration = ClientRegistration(
        CLIENT_ID,
        SECRET,
        redirect_uris=(f"{origin}/bff/callback",),
        post_logout_redirect_uris=(f"{origin}/",),
        **extra,
    )
    with running_devidp(tmp_path, (registration,), **(idp or {})) as server:
        doc = base_document(public_origin=origin, issuer=server.url)
        doc["oidc"].update(client_id=CLIENT_ID, client_secret=SECRET, **oidc)
        transport = RecordingTransport()
        if not start_bff:
            sock.close()
            yield World(server, origin, transport, doc)
            return
        app = BffApp(make_config(doc), store=MemoryStore(), idp_transport=transport)
        with serve(app, sock=sock) as url:
            yield World(server, url, transport, doc)


def query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    head, body, _ = (base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)) for p in token.split("."))
    return json.loads(head), json.loads(body)


async def logged_in(browser: Browser, world: World) -> list[httpx.Response]:
    hops = await sign_in_through_form(browser, world.bff)
    user = await browser.request("GET", f"{world.bff}/bff/user", headers=XHR)
    assert user.status_code == 200, user.text
    assert user.json()["sub"] == "alice-0001"
    return hops
