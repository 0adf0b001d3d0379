"""A small but real OpenID Provider for tests: a Starlette app with joserfc keys, served over HTTP by ``running()``.

    with running(TestProvider()) as provider:
        provider.issuer                     # its URL: every URL in discovery derives from it

No login UI: ``/authorize`` logs in ``login_as`` at once and redirects back with a code. Knobs (keyword arguments,
and attributes a test may change at any time; they stay until changed) make the next answers misbehave; records
(``token_requests``, ``revoked_tokens``, ...) let a test check what the client really sent. Forged tokens are
forged the way an attacker would; PKCE and client authentication are checked with code written independently of
bff's, so a bug there cannot hide itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Literal
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit, urlunsplit

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.support.leak_guard import GUARD
from tests.support.servers import serve

IdTokenMode = Literal["good", "bad_signature", "alg_none", "hs256_with_public_key", "unknown_kid", "header_jwk"]
BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
DEFAULT_CLIENT_SECRET = "test-client-secret-0123456789-abcdefghij"
DEFAULT_USERS: Mapping[str, Mapping[str, Any]] = {
    "alice": {"sub": "alice-0001", "name": "Alice Example", "email": "alice@example.com", "email_verified": True},
    "bob": {"sub": "bob-0002", "name": "Bob Example", "email": "bob@example.com", "email_verified": False},
}


class _Remove:
    def __repr__(self) -> str:
        return "REMOVE"


#: In ``id_token_claims_override`` (or a ``claims_override``), deletes the claim instead of setting it.
REMOVE: Final = _Remove()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64json(value: Mapping[str, Any]) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def _with_query(url: str, params: Mapping[str, str]) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query="&".join(p for p in (parts.query, urlencode(params)) if p)))


class _Refused(Exception):
    """An OAuth error answer (RFC 6749 5.2)."""

    def __init__(self, error: str, status: int = 400) -> None:
        super().__init__(error)
        self.error = error
        self.status = status


@dataclass
class _Code:
    user: str
    redirect_uri: str
    code_challenge: str
    nonce: str | None
    scope: str
    sid: str


@dataclass
class _Refresh:
    family: str
    user: str
    scope: str
    sid: str
    spent: bool = False


@dataclass(eq=False, repr=False, kw_only=True)
class TestProvider:
    """An OpenID Provider on joserfc keys (RS256 or ES256). Every knob is a keyword argument and an attribute."""

    __test__: ClassVar[bool] = False  # not a pytest test class, whatever its name

    alg: Literal["RS256", "ES256"] = "RS256"
    client_id: str = "spa-bff"
    #: None makes the client public (auth method "none"); ``client_jwks`` enables private_key_jwt.
    client_secret: str | None = DEFAULT_CLIENT_SECRET
    client_jwks: KeySet | None = None
    access_token_ttl: int = 300
    id_token_ttl: int = 300
    rotate_refresh_tokens: bool = True
    users: dict[str, dict[str, Any]] = field(default_factory=lambda: {k: dict(v) for k, v in DEFAULT_USERS.items()})
    login_as: str = "alice"
    #: RFC 9207 ``iss`` in the authorization response.
    send_iss: bool = True
    #: None accepts any redirect_uri (bff's port is known only once it serves).
    redirect_uris: Sequence[str] | None = None
    issuer: str = "http://127.0.0.1"
    clock: Callable[[], float] = time.time
    # --- knobs for misbehaviour (they stay until changed) -----------------------------------------------------------
    id_token_claims_override: dict[str, Any] = field(default_factory=dict)
    id_token_mode: IdTokenMode = "good"
    authorize_error: str | None = None
    token_error: str | None = None
    fail_token_endpoint_with: int | None = None
    #: Like ``fail_token_endpoint_with``, for token exchanges (RFC 8693) only: the other grants still work.
    fail_exchanges_with: int | None = None
    token_delay: float = 0.0
    #: When set, token answers wait until this event is set (another thread's test releases them).
    token_gate: threading.Event | None = None
    #: Like ``token_gate``, for token exchanges (RFC 8693) only: the other grants answer at once.
    exchange_gate: threading.Event | None = None
    #: When set, JWKS answers wait until this event is set.
    jwks_gate: threading.Event | None = None
    #: When set, the JWKS endpoint answers this status (an outage of the IdP's keys).
    fail_jwks_with: int | None = None
    revocation_fails: bool = False
    omit_revocation_endpoint: bool = False
    # --- records --------------------------------------------------------------------------------------------------
    token_requests: list[dict[str, str]] = field(default_factory=list, init=False)
    revoked_tokens: list[str] = field(default_factory=list, init=False)
    token_responses: list[dict[str, Any]] = field(default_factory=list, init=False)
    refresh_calls: int = field(default=0, init=False)
    #: Token exchanges (RFC 8693) answered, and the audiences the client may exchange for.
    exchange_calls: int = field(default=0, init=False)
    exchange_audiences: tuple[str, ...] = ("orders-api",)
    #: Refresh tokens presented again after rotation (each revoked its whole family).
    reuse_detected: int = field(default=0, init=False)
    jwks_requests: int = field(default=0, init=False)
    authorize_requests: list[dict[str, str]] = field(default_factory=list, init=False)
    end_session_requests: list[dict[str, str]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self._keys: list[RSAKey | ECKey] = [self._new_key()]
        self._codes: dict[str, _Code] = {}
        self._refresh_tokens: dict[str, _Refresh] = {}
        self._revoked_families: set[str] = set()
        self.app = Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self._discovery),
                Route("/jwks", self._jwks),
                Route("/authorize", self._authorize),
                Route("/token", self._token, methods=["POST"]),
                Route("/revoke", self._revoke, methods=["POST"]),
                Route("/end_session", self._end_session),
            ]
        )

    # --- keys and tokens ------------------------------------------------------------------------------------------

    def _new_key(self, kid: str | None = None) -> RSAKey | ECKey:
        params = {"kid": kid or f"k-{secrets.token_hex(4)}", "use": "sig", "alg": self.alg}
        if self.alg == "ES256":
            return ECKey.generate_key("P-256", parameters=params)  # type: ignore[arg-type]
        return RSAKey.generate_key(2048, parameters=params)  # type: ignore[arg-type]

    @property
    def signing_key(self) -> RSAKey | ECKey:
        return self._keys[-1]

    def rotate_key(self, *, keep_old: bool = True) -> None:
        """Sign with a new key from now on; the JWKS keeps publishing the old one unless ``keep_old`` is False."""
        self._keys = [*self._keys, self._new_key()] if keep_old else [self._new_key()]

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.as_dict(private=False) for key in self._keys]}

    def sign(self, claims: Mapping[str, Any], *, typ: str = "JWT", mode: IdTokenMode = "good") -> str:
        """A JWT over ``claims`` with the signing key, or forged as ``mode`` says."""
        key = self.signing_key
        header: dict[str, Any] = {"alg": self.alg, "kid": key.kid, "typ": typ}
        if mode == "good":
            return jwt.encode(header, dict(claims), key, algorithms=[self.alg])
        if mode == "bad_signature":  # a valid signature with one byte flipped
            head, payload, signature = jwt.encode(header, dict(claims), key, algorithms=[self.alg]).split(".")
            raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
            raw[len(raw) // 2] ^= 0x01
            return f"{head}.{payload}.{_b64(bytes(raw))}"
        if mode == "alg_none":  # RFC 7519 6.1 unsecured JWT: empty signature
            return f"{_b64json({'alg': 'none', 'typ': typ})}.{_b64json(claims)}."
        if mode == "hs256_with_public_key":  # the RS256-to-HS256 confusion: HMAC keyed with the public key PEM
            signing_input = f"{_b64json({**header, 'alg': 'HS256'})}.{_b64json(claims)}"
            mac = hmac.new(key.as_pem(private=False), signing_input.encode(), hashlib.sha256).digest()
            return f"{signing_input}.{_b64(mac)}"
        attacker = self._new_key(kid=f"unknown-{secrets.token_hex(4)}")
        if mode == "unknown_kid":
            return jwt.encode({**header, "kid": attacker.kid}, dict(claims), attacker, algorithms=[self.alg])
        # header_jwk: signed by the attacker, who offers the key in the header and claims the IdP's kid.
        header["jwk"] = attacker.as_dict(private=False)
        return jwt.encode(header, dict(claims), attacker, algorithms=[self.alg])

    def _claims(self, ttl: int, **claims: Any) -> dict[str, Any]:
        now = int(self.clock())
        return {"iss": self.issuer, "aud": self.client_id, "iat": now, "exp": now + ttl, **claims}

    def mint_id_token(self, *, user: str | None = None, nonce: str | None = None, sid: str | None = None) -> str:
        """An ID token for ``user`` (default ``login_as``), with the override and mode knobs applied."""
        profile = self.users[user or self.login_as]
        claims = self._claims(self.id_token_ttl, auth_time=int(self.clock()), sid=sid or secrets.token_hex(8))
        claims.update(profile, **({"nonce": nonce} if nonce is not None else {}))
        return self.sign(_apply(claims, self.id_token_claims_override), mode=self.id_token_mode)

    def mint_logout_token(
        self, *, user: str | None = None, sid: str | None = None, claims_override: Mapping[str, Any] | None = None,
        typ: str = "logout+jwt", mode: IdTokenMode = "good",
    ) -> str:  # fmt: skip
        """A logout token (Back-Channel Logout 1.0 section 2.4) with ``sub`` of ``user`` and, if given, ``sid``."""
        sub = self.users[user or self.login_as]["sub"]
        claims = self._claims(120, jti=secrets.token_hex(16), events={BACKCHANNEL_LOGOUT_EVENT: {}}, sub=sub)
        if sid is not None:
            claims["sid"] = sid
        return self.sign(_apply(claims, claims_override or {}), typ=typ, mode=mode)

    def _access_token(self, sub: str, scope: str, resource: str | None) -> str:
        """An RFC 9068 access token (``typ: at+jwt``)."""
        claims = self._claims(self.access_token_ttl, sub=sub, client_id=self.client_id, scope=scope)
        return self.sign({**claims, "aud": resource or "api", "jti": secrets.token_hex(16)}, typ="at+jwt")

    # --- endpoints ------------------------------------------------------------------------------------------------

    async def _discovery(self, request: Request) -> Response:
        i = self.issuer
        doc: dict[str, Any] = {
            "issuer": i,
            "authorization_endpoint": f"{i}/authorize",
            "token_endpoint": f"{i}/token",
            "jwks_uri": f"{i}/jwks",
            "end_session_endpoint": f"{i}/end_session",
            "revocation_endpoint": f"{i}/revoke",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [self.alg],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "backchannel_logout_supported": True,
            "backchannel_logout_session_supported": True,
            "authorization_response_iss_parameter_supported": self.send_iss,
        }
        if self.omit_revocation_endpoint:
            del doc["revocation_endpoint"]
        GUARD.learn_metadata(doc)
        return JSONResponse(doc)

    async def _jwks(self, request: Request) -> Response:
        self.jwks_requests += 1
        if self.jwks_gate is not None:
            await asyncio.to_thread(self.jwks_gate.wait, 30)
        if self.fail_jwks_with is not None:
            return JSONResponse({"error": "unavailable"}, status_code=self.fail_jwks_with)
        return JSONResponse(self.jwks())

    async def _authorize(self, request: Request) -> Response:
        q = dict(request.query_params)
        self.authorize_requests.append(q)
        redirect_uri = q.get("redirect_uri", "")
        # RFC 6749 4.1.2.1: never redirect to an unverified redirect_uri or for an unknown client.
        if q.get("client_id") != self.client_id:
            return HTMLResponse("unknown client_id", status_code=400)
        if not redirect_uri or (self.redirect_uris is not None and redirect_uri not in self.redirect_uris):
            return HTMLResponse("redirect_uri not registered", status_code=400)

        def back(**params: str) -> Response:
            if "state" in q:
                params["state"] = q["state"]
            if self.send_iss:
                params["iss"] = self.issuer  # RFC 9207 2
            return RedirectResponse(_with_query(redirect_uri, params), status_code=302)

        if self.authorize_error:
            return back(error=self.authorize_error)
        if q.get("response_type") != "code":
            return back(error="unsupported_response_type")
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return back(error="invalid_request", error_description="PKCE with S256 is required")
        scope = q.get("scope", "")
        if "openid" not in scope.split():
            return back(error="invalid_scope")
        code = secrets.token_urlsafe(32)
        GUARD.learn(code, "authorization code")
        self._codes[code] = _Code(
            self.login_as, redirect_uri, q["code_challenge"], q.get("nonce"), scope, secrets.token_hex(8)
        )
        return back(code=code)

    async def _token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        self.token_requests.append(form)
        if self.token_delay:
            await asyncio.sleep(self.token_delay)
        if self.token_gate is not None:
            await asyncio.to_thread(self.token_gate.wait, 30)
        failing = self.fail_token_endpoint_with
        if form.get("grant_type") == "urn:ietf:params:oauth:grant-type:token-exchange":
            if self.exchange_gate is not None:
                await asyncio.to_thread(self.exchange_gate.wait, 30)
            failing = failing or self.fail_exchanges_with
        if failing is not None:
            html = "<html><body><h1>Bad Gateway</h1></body></html>"
            return HTMLResponse(html, status_code=failing)
        try:
            answer = self._grant(request, form)
        except _Refused as refused:
            body = {"error": refused.error, "error_description": "refused by the test provider"}
            return JSONResponse(body, status_code=refused.status)
        return JSONResponse(answer, headers={"Cache-Control": "no-store"})  # RFC 6749 5.1

    def _grant(self, request: Request, form: dict[str, str]) -> dict[str, Any]:
        self._authenticate(request, form)
        if self.token_error:
            raise _Refused(self.token_error)
        grant = form.get("grant_type")
        if grant == "authorization_code":
            return self._code_grant(form)
        if grant == "refresh_token":
            return self._refresh_grant(form)
        if grant == "client_credentials":
            return self._answer(self.client_id, form.get("scope", ""), None, resource=form.get("resource"))
        if grant == "urn:ietf:params:oauth:grant-type:token-exchange":
            return self._exchange_grant(form)
        raise _Refused("unsupported_grant_type")

    def _exchange_grant(self, form: dict[str, str]) -> dict[str, Any]:
        """RFC 8693 impersonation: an access token this provider issued, for an allowed audience."""
        self.exchange_calls += 1
        audience = form.get("audience", "")
        if audience not in self.exchange_audiences:
            raise _Refused("invalid_target")
        issued = [a for a in self.token_responses if a.get("access_token") == form.get("subject_token")]
        if not issued or form.get("subject_token_type") != "urn:ietf:params:oauth:token-type:access_token":
            raise _Refused("invalid_request")
        keys = KeySet(list(self._keys))
        sub = jwt.decode(issued[0]["access_token"], keys, algorithms=["RS256", "ES256"]).claims["sub"]
        answer = self._answer(str(sub), form.get("scope", issued[0].get("scope", "")), None, resource=audience)
        answer["issued_token_type"] = "urn:ietf:params:oauth:token-type:access_token"
        return answer

    def _authenticate(self, request: Request, form: dict[str, str]) -> None:
        """Client authentication (RFC 6749 2.3.1, RFC 7523 2.2); records how the client authenticated."""
        header = request.headers.get("authorization", "")
        if header[:6].lower() == "basic ":
            # RFC 6749 2.3.1: the id and secret were form-urlencoded before base64.
            try:
                raw_id, _, raw_secret = base64.b64decode(header[6:], validate=True).decode().partition(":")
            except ValueError as exc:
                raise _Refused("invalid_client", 401) from exc
            client_id, secret, method = unquote_plus(raw_id), unquote_plus(raw_secret), "client_secret_basic"
        elif "client_assertion" in form:
            client_id, secret, method = self._check_assertion(form), None, "private_key_jwt"
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret")
            method = "client_secret_post" if secret is not None else "none"
        form["client_auth"] = method
        if client_id != self.client_id:
            raise _Refused("invalid_client", 401)
        if method == "private_key_jwt" or (self.client_secret is None and method == "none"):
            return
        if self.client_secret is None or not hmac.compare_digest((secret or "").encode(), self.client_secret.encode()):
            raise _Refused("invalid_client", 401)

    def _check_assertion(self, form: dict[str, str]) -> str:
        if self.client_jwks is None or form.get("client_assertion_type") != (
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        ):
            raise _Refused("invalid_client", 401)
        try:
            claims = jwt.decode(form["client_assertion"], self.client_jwks, algorithms=["RS256", "ES256"]).claims
        except (JoseError, ValueError) as exc:
            raise _Refused("invalid_client", 401) from exc
        now = self.clock()
        if (
            claims.get("aud") != f"{self.issuer}/token"
            or not now < claims.get("exp", 0) <= now + 300
            or (claims.get("iss") != claims.get("sub") or not claims.get("jti"))
        ):
            raise _Refused("invalid_client", 401)
        return str(claims["iss"])

    def _code_grant(self, form: dict[str, str]) -> dict[str, Any]:
        code = self._codes.pop(form.get("code", ""), None)  # one use only (RFC 6749 4.1.2)
        if code is None or form.get("redirect_uri") != code.redirect_uri:
            raise _Refused("invalid_grant")
        # RFC 7636 4.6, computed here independently of bff.
        digest = hashlib.sha256(form.get("code_verifier", "").encode("ascii")).digest()
        if not hmac.compare_digest(_b64(digest), code.code_challenge):
            raise _Refused("invalid_grant")
        user = self.users[code.user]
        id_token = self.mint_id_token(user=code.user, nonce=code.nonce, sid=code.sid)
        return self._answer(
            user["sub"], code.scope, id_token, refresh=_Refresh(secrets.token_hex(8), code.user, code.scope, code.sid)
        )

    def _refresh_grant(self, form: dict[str, str]) -> dict[str, Any]:
        self.refresh_calls += 1
        record = self._refresh_tokens.get(form.get("refresh_token", ""))
        if record is None or record.family in self._revoked_families:
            raise _Refused("invalid_grant")
        if record.spent:  # reuse of a rotated token: revoke the whole family (RFC 9700 4.14.2)
            self.reuse_detected += 1
            self._revoked_families.add(record.family)
            raise _Refused("invalid_grant")
        scope = form.get("scope", record.scope)
        if not set(scope.split()) <= set(record.scope.split()):
            raise _Refused("invalid_scope")
        record.spent = self.rotate_refresh_tokens
        new = _Refresh(record.family, record.user, scope, record.sid) if self.rotate_refresh_tokens else None
        id_token = self.mint_id_token(user=record.user, sid=record.sid) if "openid" in scope.split() else None
        return self._answer(self.users[record.user]["sub"], scope, id_token, refresh=new, resource=form.get("resource"))

    def _answer(
        self,
        sub: str,
        scope: str,
        id_token: str | None,
        *,
        refresh: _Refresh | None = None,
        resource: str | None = None,
    ) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "access_token": self._access_token(sub, scope, resource),
            "token_type": "Bearer",
            "expires_in": self.access_token_ttl,
            "scope": scope,
        }
        if refresh is not None:
            token = secrets.token_urlsafe(32)
            self._refresh_tokens[token] = refresh
            answer["refresh_token"] = token
        if id_token is not None:
            answer["id_token"] = id_token
        self.token_responses.append(answer)
        GUARD.learn_token_answer(answer)  # also what it hands a ``bff serve`` subprocess, out of this process' sight
        return answer

    def issued_tokens(self) -> list[str]:
        """Every access, refresh and ID token this provider handed out: none may appear in bff's answers or logs."""
        return [
            answer[name]
            for answer in self.token_responses
            for name in ("access_token", "refresh_token", "id_token")
            if name in answer
        ]

    async def _revoke(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        if self.revocation_fails:
            return HTMLResponse("<html><body>Service Unavailable</body></html>", status_code=503)
        try:
            self._authenticate(request, form)
        except _Refused as refused:
            return JSONResponse({"error": refused.error}, status_code=refused.status)
        token = form.get("token", "")
        self.revoked_tokens.append(token)
        record = self._refresh_tokens.get(token)
        if record is not None:  # RFC 7009 2.1: revoking a refresh token ends its grant
            self._revoked_families.add(record.family)
        return Response(status_code=200)  # RFC 7009 2.2: 200 even for an unknown token

    async def _end_session(self, request: Request) -> Response:
        q = dict(request.query_params)
        self.end_session_requests.append(q)
        target = q.get("post_logout_redirect_uri")
        if target:
            return RedirectResponse(_with_query(target, {"state": q["state"]} if "state" in q else {}), 302)
        return HTMLResponse("<html><body>You are logged out.</body></html>")


def _apply(claims: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    for name, value in override.items():
        if value is REMOVE:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


@contextlib.contextmanager
def running(provider: TestProvider) -> Iterator[TestProvider]:
    """``provider`` served on loopback, its ``issuer`` set to its URL."""
    with serve(provider.app) as base_url:
        provider.issuer = base_url
        yield provider
