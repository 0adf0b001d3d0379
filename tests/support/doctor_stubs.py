"""What ``bff doctor`` is run against in its tests: the demo's three servers on loopback, and small stubs for the
broken setups that the real servers cannot be talked into.

* :func:`running_demo`: the reference IdP, the demo API and bff, built by ``bff demo``'s own ``build_apps`` and
  served on free loopback ports; yields the demo's bff configuration and URL.
* :func:`stub_idp`: an IdP of which only the discovery document, the JWKS and the clock matter, each tweakable
  (another issuer, no S256, a skewed ``Date``).
* :func:`front_proxy`: a proxy in front of a running bff that spoils its answers the way a misconfigured ingress
  or CDN does (CORS headers on ``/bff/*``, cookies stripped of ``HttpOnly``).
"""

from __future__ import annotations

import base64
import contextlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bff.config import Config
from bff.types import Message, Receive, Scope, Send
from bff_devtools.demo.run import DemoOptions, build_apps, build_bff_config
from tests.support.servers import serve
from tests.support.stack import bound_socket


@dataclass(frozen=True)
class Demo:
    config: Config
    url: str


@contextlib.contextmanager
def running_demo(data_dir: Path, redis_url: str) -> Iterator[Demo]:
    """``bff demo`` with ``REDIS_URL=redis_url``, on free ports of 127.0.0.1 (its URLs say localhost)."""
    sockets = [bound_socket() for _ in range(3)]
    bff_port, idp_port, api_port = (s.getsockname()[1] for s in sockets)
    options = DemoOptions(port=bff_port, idp_port=idp_port, api_port=api_port, redis_url=redis_url)
    idp, api, bff = build_apps(options, data_dir)
    with serve(idp, sock=sockets[1]), serve(api, sock=sockets[2]), serve(bff, sock=sockets[0]):
        yield Demo(build_bff_config(options), options.public_origin)


def discovery(base: str, issuer: str, **overrides: Any) -> dict[str, Any]:
    """A discovery document like the reference IdP's, with endpoints under ``base``; ``overrides`` replace or (as
    None) remove members."""
    document: dict[str, Any] = {
        "issuer": issuer,
        "authorization_endpoint": f"{base}/authorize",
        "token_endpoint": f"{base}/token",
        "jwks_uri": f"{base}/jwks",
        "revocation_endpoint": f"{base}/revoke",
        "end_session_endpoint": f"{base}/end_session",
        "id_token_signing_alg_values_supported": ["ES256"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
        "backchannel_logout_supported": True,
    }
    document.update(overrides)
    return {k: v for k, v in document.items() if v is not None}


@contextlib.contextmanager
def stub_idp(
    *, issuer: str | None = None, clock_offset: float = 0.0, par_secret: str | None = None, **overrides: Any
) -> Iterator[str]:
    """Serve a stub IdP and yield its URL (the configured issuer). ``issuer``: the one its document claims (default:
    its URL); ``clock_offset``: seconds its ``Date`` header is off; ``par_secret``: a PAR endpoint (RFC 9126) that
    accepts client ``spa-bff`` with this secret (``client_secret_basic``); ``overrides``: see :func:`discovery`."""
    base = ""
    if par_secret is not None:
        overrides.setdefault("pushed_authorization_request_endpoint", "{base}/par")

    def dated(response: Response) -> Response:
        response.headers["date"] = formatdate(time.time() + clock_offset, usegmt=True)
        return response

    async def metadata(request: Request) -> Response:
        filled = {k: v.format(base=base) if isinstance(v, str) else v for k, v in overrides.items()}
        return dated(JSONResponse(discovery(base, issuer or base, **filled)))

    async def jwks(request: Request) -> Response:
        key = {"kty": "EC", "crv": "P-256", "x": "A" * 43, "y": "A" * 43, "kid": "stub"}
        return dated(JSONResponse({"keys": [key]}))

    async def authorize(request: Request) -> Response:
        return dated(Response(status_code=302, headers={"location": f"{base}/login"}))

    async def token(request: Request) -> Response:
        return dated(JSONResponse({"error": "invalid_grant"}, status_code=400))

    async def par(request: Request) -> Response:
        expected = "Basic " + base64.b64encode(f"spa-bff:{par_secret}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        return JSONResponse(
            {"request_uri": "urn:ietf:params:oauth:request_uri:stub", "expires_in": 60}, status_code=201
        )

    app = Starlette(
        routes=[
            Route("/par", par, methods=["POST"]),
            Route("/.well-known/openid-configuration", metadata),
            Route("/jwks", jwks),
            Route("/authorize", authorize),
            Route("/token", token, methods=["POST"]),
        ]
    )
    with serve(app, date_header=False) as url:
        base = url
        yield url


Spoil = Callable[[str, list[tuple[bytes, bytes]]], list[tuple[bytes, bytes]]]


def cors_everywhere(path: str, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """An ingress with a blanket CORS rule."""
    return [*headers, (b"access-control-allow-origin", b"*"), (b"access-control-allow-credentials", b"true")]


def cookies_readable(path: str, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """A proxy that rewrites ``Set-Cookie`` and drops ``HttpOnly`` on the way."""
    return [(k, re.sub(rb";\s*HttpOnly", b"", v, flags=re.IGNORECASE) if k == b"set-cookie" else v) for k, v in headers]


@contextlib.contextmanager
def front_proxy(
    target: str, spoil: Spoil = lambda path, headers: headers, drop: tuple[bytes, ...] = ()
) -> Iterator[str]:
    """Serve a proxy to ``target`` whose answers' headers pass through ``spoil`` and which does not forward the
    request headers named in ``drop``; yield its URL."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in (b"host", *drop)]
        url = (
            target
            + scope["raw_path"].decode("latin-1")
            + ("?" + scope["query_string"].decode() if scope["query_string"] else "")
        )
        # Straight to the loopback address: resolving localhost may try ::1 first.
        async with httpx.AsyncClient() as client:
            answer = await client.request(
                scope["method"], url.replace("//localhost:", "//127.0.0.1:", 1), headers=headers
            )
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.multi_items()]
        raw = [(k, v) for k, v in raw if k not in (b"content-length", b"content-encoding", b"transfer-encoding")]
        start: Message = {
            "type": "http.response.start",
            "status": answer.status_code,
            "headers": spoil(scope["path"], raw),
        }
        await send(start)
        await send({"type": "http.response.body", "body": answer.content})

    with serve(app) as url:
        yield url
