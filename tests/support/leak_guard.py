"""The suite-wide token leak guard: no answer bff sends to a browser may hold a token, a code or a secret.

What the guard knows of (learnt per test, then forgotten: tokens are unique, and scanning a large body for few
secrets stays cheap):

* every access, refresh and ID token and every client assertion an IdP hands out or bff sends, seen where bff talks
  to its IdP: ``httpx.AsyncClient.send`` and ``httpx.Client.send`` are wrapped, token-endpoint answers and token
  requests (codes, refresh tokens, client secrets in the form or in ``Authorization: Basic``) are recorded; the
  test OpenID Provider also reports what it issues (for ``bff serve`` subprocesses, whose IdP calls this process
  cannot see);
* every authorization code: from the IdP's redirect when an httpx client follows it, and from the query of any
  request to ``/bff/callback`` before bff answers it (so a code bff refuses to spend is known too);
* the client secret and the session keys of every bff app that answers a request.

What the guard scans:

* every HTTP answer of a ``BffApp`` in this process, whatever the client (httpx, Playwright's Chromium, raw
  sockets): ``BffApp.__call__`` is wrapped and its ``send`` messages are scanned, status, headers and every body
  chunk (with an overlap, so a token split across chunks is still found);
* the answers of ``bff serve`` subprocesses a test registered with :meth:`LeakGuard.watch_bff`, at the httpx client.

The IdPs' own answers are never scanned: they legitimately hand tokens to bff. The one exception in bff's answers:
a redirect (3xx) whose ``Location`` is exactly a known ``end_session_endpoint`` may carry an ID token as the
``id_token_hint`` parameter, and nowhere else (RP-Initiated Logout 1.0 section 2): a top-level navigation's
``Location`` is not readable by a script. A finding names the kind of secret and where it was, never its value.
Secrets shorter than ``MIN_SECRET`` characters are not tracked (they would match by chance).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote_plus, urlencode, urlsplit

import httpx
import pytest

from bff.types import Message, Receive, Scope, Send

MIN_SECRET = 16
TOKEN_FIELDS = {"access_token": "access token", "refresh_token": "refresh token", "id_token": "ID token"}
ID_TOKEN = "ID token"
CALLBACK = "/bff/callback"
REDIRECTS = range(300, 400)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _endpoint(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}".lower()


@dataclass
class LeakGuard:
    #: secret (as bytes, plain and percent-encoded) -> its kind ("access token", "client secret", ...).
    secrets: dict[bytes, str] = field(default_factory=dict)
    #: ``end_session_endpoint`` s of the IdPs seen (scheme://host:port/path): the one place an ID token may go.
    end_session_endpoints: set[str] = field(default_factory=set)
    #: Origins of ``bff serve`` subprocesses whose answers are scanned at the client.
    bff_origins: set[str] = field(default_factory=set)
    findings: list[str] = field(default_factory=list)
    _longest: int = 0
    _apps_seen: set[int] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- what the guard knows of -----------------------------------------------------------------------------------

    def learn(self, value: object, kind: str) -> None:
        if not isinstance(value, str) or len(value) < MIN_SECRET:
            return
        with self._lock:
            for form in {value, quote(value, safe="")}:
                raw = form.encode("utf-8", "replace")
                self.secrets.setdefault(raw, kind)
                self._longest = max(self._longest, len(raw))

    def learn_token_answer(self, answer: Mapping[str, Any]) -> None:
        for name, kind in TOKEN_FIELDS.items():
            self.learn(answer.get(name), kind)

    def learn_metadata(self, document: Mapping[str, Any]) -> None:
        endpoint = document.get("end_session_endpoint")
        if isinstance(endpoint, str):
            with self._lock:
                self.end_session_endpoints.add(_endpoint(endpoint))

    def learn_config(self, app_id: int, client_secret: str | None, session_keys: Iterable[str]) -> None:
        if app_id in self._apps_seen:
            return
        self._apps_seen.add(app_id)
        self.learn(client_secret, "client secret")
        for key in session_keys:
            self.learn(key, "session key")

    def learn_token_request(self, request: httpx.Request) -> None:
        """Codes, refresh tokens, client secrets and assertions a client sends to a token/revocation endpoint."""
        if request.method != "POST" or "form-urlencoded" not in request.headers.get("content-type", ""):
            return
        try:
            form = dict(parse_qsl(request.content.decode("utf-8", "replace"), keep_blank_values=True))
        except httpx.RequestNotRead:
            return
        if form.get("grant_type") == "authorization_code":
            self.learn(form.get("code"), "authorization code")
        self.learn(form.get("refresh_token"), "refresh token")
        self.learn(form.get("client_secret"), "client secret")
        self.learn(form.get("client_assertion"), "client assertion")
        if form.get("token_type_hint") in ("refresh_token", "access_token"):
            self.learn(form.get("token"), TOKEN_FIELDS[form["token_type_hint"]])
        basic = request.headers.get("authorization", "")
        if basic[:6].lower() == "basic ":
            try:
                _, _, secret = base64.b64decode(basic[6:], validate=True).decode().partition(":")
            except ValueError:
                return
            self.learn(unquote_plus(secret), "client secret")

    def learn_answer(self, response: httpx.Response) -> None:
        try:
            data = json.loads(response.content)
        except (httpx.ResponseNotRead, ValueError):
            return
        if isinstance(data, dict):
            self.learn_token_answer(data)
            self.learn_metadata(data)

    # --- the check -------------------------------------------------------------------------------------------------

    def check(self, where: str, status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes = b"") -> list[str]:
        """What ``status``, ``headers`` and ``body`` of the answer to ``where`` leak (recorded, and returned)."""
        found: list[str] = []
        for name, value in headers:
            lower = name.lower().decode("latin-1")
            for secret, kind in self._in(name + b": " + value):
                if not self._allowed(status, lower, value, secret, kind):
                    found.append(f"{kind} leaked in the {lower} header of the answer to {where} (HTTP {status})")
        for _, kind in self._in(body):
            found.append(f"{kind} leaked in the body of the answer to {where} (HTTP {status})")
        if found:
            with self._lock:
                self.findings.extend(found)
        return found

    def check_chunk(self, where: str, status: int, tail: bytes, chunk: bytes) -> bytes:
        """Scan a body chunk with the end of the previous one; returns the tail to pass with the next chunk."""
        data = tail + chunk
        self.check(where, status, (), data)
        keep = self._longest - 1
        return data[-keep:] if keep > 0 else b""

    def _in(self, data: bytes) -> list[tuple[bytes, str]]:
        if not data:
            return []
        with self._lock:
            known = list(self.secrets.items())
        return [(secret, kind) for secret, kind in known if secret in data]

    def _allowed(self, status: int, name: str, value: bytes, secret: bytes, kind: str) -> bool:
        """An ID token as the ``id_token_hint`` of a redirect to a known end-session endpoint, and only there."""
        if kind != ID_TOKEN or name != "location" or status not in REDIRECTS:
            return False
        location = value.decode("latin-1")
        parts = urlsplit(location)
        if _endpoint(location) not in self.end_session_endpoints or secret.decode() in parts.fragment:
            return False
        params = parse_qsl(parts.query, keep_blank_values=True)
        hints = [v for k, v in params if k == "id_token_hint"]
        others = urlencode([(k, v) for k, v in params if k != "id_token_hint"])
        return hints == [secret.decode()] and secret.decode() not in others and secret not in others.encode()

    # --- per test --------------------------------------------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self.secrets.clear()
            self.findings.clear()
            self._apps_seen.clear()
            # A bff serve port of an earlier test may belong to another server (an IdP) in this one.
            self.bff_origins.clear()
            self._longest = 0

    def watch_bff(self, url: str) -> None:
        """Scan the answers of the bff at ``url`` (a ``bff serve`` subprocess) at the httpx client."""
        with self._lock:
            self.bff_origins.add(_origin(url))

    def take_findings(self) -> list[str]:
        with self._lock:
            found, self.findings = self.findings, []
        return found


#: The one guard of the test process.
GUARD = LeakGuard()


class _AnswerWatcher:
    """Scans the ASGI messages of one answer of a ``BffApp``."""

    def __init__(self, guard: LeakGuard, where: str, send: Send) -> None:
        self.guard = guard
        self.where = where
        self.send = send
        self.status = 0
        self.tail = b""

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = int(message["status"])
            self.guard.check(self.where, self.status, message.get("headers", []))
        elif kind == "http.response.body":
            self.tail = self.guard.check_chunk(self.where, self.status, self.tail, bytes(message.get("body", b"")))
        await self.send(message)


def guarded_app_call(
    guard: LeakGuard, original: Callable[[Any, Scope, Receive, Send], Any]
) -> Callable[[Any, Scope, Receive, Send], Any]:
    """A ``BffApp.__call__`` that scans every HTTP answer the app sends."""

    async def call(app: Any, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await original(app, scope, receive, send)
            return
        oidc = app.config.oidc
        guard.learn_config(
            id(app),
            oidc.client_secret.reveal() if oidc.client_secret is not None else None,
            [k.reveal() for k in app.config.session.keys],
        )
        if scope.get("path") == CALLBACK:  # the code is known before bff answers, even if it never spends it
            query = bytes(scope.get("query_string", b"")).decode("latin-1")
            guard.learn(dict(parse_qsl(query)).get("code"), "authorization code")
        where = f"{scope.get('method', '?')} {scope.get('path', '?')}"
        await original(app, scope, receive, _AnswerWatcher(guard, where, send))

    return call


def observe_exchange(guard: LeakGuard, request: httpx.Request, response: httpx.Response) -> None:
    """What an httpx client saw: learn tokens from IdP answers, scan answers of watched ``bff serve`` processes."""
    guard.learn_token_request(request)
    if response.is_redirect:  # an IdP sending a browser back with a code (RFC 6749 4.1.2)
        location = response.headers.get("location", "")
        guard.learn(dict(parse_qsl(urlsplit(location).query)).get("code"), "authorization code")
    if _origin(str(request.url)) in guard.bff_origins:
        try:
            body = response.content
        except httpx.ResponseNotRead:
            body = b""
        status_line = f"{response.status_code} {response.reason_phrase}".encode("latin-1", "replace")
        headers = [(b":status", status_line), *response.headers.raw]
        guard.check(f"{request.method} {request.url.path}", response.status_code, headers, body)
    else:
        guard.learn_answer(response)


def guarded_async_send(guard: LeakGuard, original: Callable[..., Any]) -> Callable[..., Any]:
    async def send(client: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        response: httpx.Response = await original(client, request, **kwargs)
        observe_exchange(guard, request, response)
        return response

    return send


def guarded_sync_send(guard: LeakGuard, original: Callable[..., Any]) -> Callable[..., Any]:
    def send(client: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        response: httpx.Response = original(client, request, **kwargs)
        observe_exchange(guard, request, response)
        return response

    return send


def fingerprint(token: str) -> str:
    """What a test upstream echoes instead of a token it received: bff relays upstream answers to the browser."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:32]


def install(monkeypatch: pytest.MonkeyPatch) -> LeakGuard:
    """Wrap bff's answers and httpx's sends, for the whole session: fixtures of any scope talk to IdPs (discovery
    documents name the end-session endpoints) and serve bff apps."""
    from bff.app import BffApp

    monkeypatch.setattr(BffApp, "__call__", guarded_app_call(GUARD, BffApp.__call__))
    monkeypatch.setattr(httpx.AsyncClient, "send", guarded_async_send(GUARD, httpx.AsyncClient.send))
    monkeypatch.setattr(httpx.Client, "send", guarded_sync_send(GUARD, httpx.Client.send))
    return GUARD


def verdict(guard: LeakGuard) -> None:
    """Fail the test if bff leaked anything while it ran (each finding once, without the secret)."""
    found = guard.take_findings()
    if found:
        pytest.fail("bff sent a secret to the browser:\n  " + "\n  ".join(dict.fromkeys(found)), pytrace=False)
