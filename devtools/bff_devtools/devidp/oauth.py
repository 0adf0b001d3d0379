"""The Starlette adapter for authlib's authorization server, and the typed face the endpoints use.

authlib ships integrations for Flask and Django, not Starlette. An integration is small (compare
``authlib/integrations/flask_oauth2``): a request class that exposes the parameters (``OAuth2Payload``:
``data``/``datalist``; ``OAuth2Request``: ``args``/``form``), ``create_oauth2_request``,
``create_json_request`` and ``handle_response`` on an ``AuthorizationServer`` subclass. Here the request is a
plain value (:class:`HttpRequest`) read from Starlette *before* authlib runs (reading a body is async), and the
response is a plain value (:class:`OAuthResponse`) turned into a Starlette response after.

**Sync meets async.** authlib's server is synchronous: its hooks (``query_authorization_code``,
``authenticate_refresh_token``, ...) must return values, while the store is async. So every authlib call runs in
a worker thread (:func:`run_in_thread`), and the hooks call the async services back on the event loop with
:func:`wait` (``anyio.from_thread.run``), blocking only their worker thread. The store is only ever touched from
the event loop, and authlib's flow stays exactly as its documentation describes; a worker thread per token request
is nothing for a development IdP. (The alternative, loading everything a hook might ask for before calling
authlib, would duplicate authlib's decisions about what to look up.)

authlib ships no type information: the subclasses below are the only place its classes appear (``# type:
ignore[misc]``: subclassing an untyped class), and :class:`DevAuthorizationServer`'s typed methods are what the
endpoints call.
"""

from __future__ import annotations

import functools
import json
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar
from urllib.parse import parse_qsl

import anyio.from_thread
import anyio.to_thread
from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    JsonPayload,
    JsonRequest,
    OAuth2Error,
    OAuth2Payload,
    OAuth2Request,
)
from authlib.oauth2.rfc9207 import IssuerParameter
from authlib.oidc.rpinitiated import EndSessionRequest
from starlette.requests import Request
from starlette.responses import Response

from bff_devtools.devidp.client_keys import PrivateKeyJWT
from bff_devtools.devidp.issuer import IdPServices, Subject
from bff_devtools.devidp.models import Client
from bff_devtools.devidp.mtls import TLS_METHODS, authenticate_by_certificate, client_certificate
from bff_devtools.devidp.records import BrowserSession

T = TypeVar("T")
P = ParamSpec("P")

#: Bounds of a form, which is parsed before anything is checked.
MAX_FIELDS = 64
MAX_FORM_BYTES = 64 * 1024
FORM = "application/x-www-form-urlencoded"


class _NoIssuedTokens(logging.Filter):
    """authlib's grants log every token they issue at DEBUG (``"Issue token %r to %r"``): a credential in the log
    (STYLE 13). This filter drops those records, on the loggers of the grants used here."""

    LOGGERS = tuple(
        f"authlib.oauth2.rfc6749.grants.{grant}"
        for grant in ("authorization_code", "refresh_token", "client_credentials")
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Issue token")


_NO_ISSUED_TOKENS = _NoIssuedTokens()


async def run_in_thread(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a synchronous authlib call in a worker thread (its hooks may then use :func:`wait`)."""
    return await anyio.to_thread.run_sync(functools.partial(function, *args, **kwargs))


def wait(function: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """From an authlib hook (in a worker thread): run an async service call on the event loop, wait for it."""

    async def call() -> T:
        return await function(*args, **kwargs)

    return anyio.from_thread.run(call)


async def read_body(request: Request) -> bytes | None:
    """The request body, or None when it exceeds ``MAX_FORM_BYTES`` (read no further)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    return bytes(body)


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


async def read_form(request: Request) -> list[tuple[str, str]]:
    """The fields of an ``application/x-www-form-urlencoded`` body (RFC 6749 3.2; appendix B), parsed by hand
    with bounds (Starlette's ``form()`` needs python-multipart). Another content type has no fields."""
    body = await read_body(request) if _content_type(request) == FORM else None
    if body is None:
        return []
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS, errors="strict")
    except ValueError:  # too many fields, or not UTF-8 (UnicodeDecodeError is a ValueError)
        return []


def authlib_uri(issuer: str, path: str) -> str:
    """The endpoint's URL as authlib is shown it, for its one use: ``InsecureTransportError.check``. That check
    allows plain http for ``localhost`` and loopback addresses, but not for ``*.localhost`` names (RFC 6761 6.3),
    which bff accepts and the compose demo uses (``http://idp.localhost:9000``). The settings already refuse a plain
    http issuer that is not loopback, so a loopback issuer is shown to authlib as ``http://localhost``."""
    if issuer.startswith("http://"):
        return "http://localhost" + path
    return issuer + path


@dataclass(frozen=True)
class HttpRequest:
    """What authlib needs of an HTTP request, read in full before it runs."""

    method: str
    #: The URL authlib sees, used only by its transport check: see :func:`authlib_uri`.
    uri: str
    headers: Mapping[str, str]
    #: The parameters: the query of a GET, the form of a POST (RFC 6749 3.1, 3.2).
    params: Sequence[tuple[str, str]]
    #: A JSON body (for authlib's JSON endpoints), else empty.
    json_body: bytes = b""
    #: The DER of the TLS client certificate (RFC 8705), from the ASGI TLS extension; None without one.
    client_cert: bytes | None = None
    #: At the token endpoint: the thumbprint of the key of a valid DPoP proof (RFC 9449 5), to bind the token to.
    dpop_jkt: str | None = None

    @classmethod
    async def read(cls, request: Request, *, issuer: str) -> HttpRequest:
        uri = authlib_uri(issuer, request.url.path)
        if request.method != "POST":
            return cls(request.method, uri, request.headers, list(request.query_params.multi_items())[:MAX_FIELDS])
        if _content_type(request) == "application/json":
            return cls(request.method, uri, request.headers, [], await read_body(request) or b"")
        cert = client_certificate(request.scope)
        return cls(request.method, uri, request.headers, await read_form(request), client_cert=cert)

    @classmethod
    def authorization(cls, issuer: str, params: Sequence[tuple[str, str]]) -> HttpRequest:
        """The authorization request a login form was shown for, replayed after the user logged in."""
        return cls("GET", authlib_uri(issuer, "/authorize"), {}, params)


class _Payload(OAuth2Payload):  # type: ignore[misc]  # authlib is untyped
    def __init__(self, params: Sequence[tuple[str, str]]) -> None:
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for name, value in params:
            self._datalist[name].append(value)
        # The first value of each; grants refuse repeated parameters themselves (RFC 6749 3.1).
        self._data = {name: values[0] for name, values in self._datalist.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class StarletteOAuth2Request(OAuth2Request):  # type: ignore[misc]
    def __init__(self, http: HttpRequest) -> None:
        super().__init__(method=http.method, uri=http.uri, headers=http.headers)
        self.http = http
        self.payload = _Payload(http.params)

    @property
    def args(self) -> dict[str, str]:
        return self.payload.data if self.http.method == "GET" else {}

    @property
    def form(self) -> dict[str, str]:
        return self.payload.data if self.http.method == "POST" else {}


class _JsonPayload(JsonPayload):  # type: ignore[misc]
    def __init__(self, body: bytes) -> None:
        self._body = body

    @property
    def data(self) -> Any:
        return json.loads(self._body or b"{}")


class StarletteJsonRequest(JsonRequest):  # type: ignore[misc]
    """For authlib's JSON endpoints (dynamic client registration, RFC 7591); none is registered here yet."""

    def __init__(self, http: HttpRequest) -> None:
        super().__init__(http.method, http.uri, http.headers)
        self.payload = _JsonPayload(http.json_body)


@dataclass
class OAuthResponse:
    """authlib's ``(status, body, headers)``, until it becomes a Starlette response."""

    status: int
    body: Any
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def location(self) -> str | None:
        return next((v for k, v in self.headers if k.lower() == "location"), None)

    @location.setter
    def location(self, value: str) -> None:  # RFC 9207's IssuerParameter rewrites it to add ``iss``
        self.headers = [(k, v) for k, v in self.headers if k.lower() != "location"] + [("Location", value)]

    def to_starlette(self) -> Response:
        content = json.dumps(self.body) if isinstance(self.body, dict) else str(self.body or "")
        return Response(content, status_code=self.status, headers=dict(self.headers))


class _IssuerParameter(IssuerParameter):  # type: ignore[misc]
    """RFC 9207: ``iss`` in every authorization response that redirects, errors included."""

    def __init__(self, issuer: str) -> None:
        self._issuer = issuer

    def get_issuer(self) -> str:
        return self._issuer


@dataclass(frozen=True)
class ConsentGrant:
    """A validated authorization request (authlib's grant after ``validate_consent_request``)."""

    grant: Any

    @property
    def needs_login(self) -> bool:
        # OpenIDCode's prompt handling: "login" without a session, or when the client sent prompt=login.
        return bool(self.grant.prompt == "login")

    @property
    def client_id(self) -> str:
        return str(self.grant.request.client.client_id)


class DevAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    """authlib's ``AuthorizationServer`` over :class:`HttpRequest` / :class:`OAuthResponse`.

    Every method that runs authlib is synchronous and must be called through :func:`run_in_thread`.
    """

    def __init__(self, services: IdPServices) -> None:
        super().__init__(scopes_supported=services.settings.scopes_supported())
        for name in _NoIssuedTokens.LOGGERS:
            logging.getLogger(name).addFilter(_NO_ISSUED_TOKENS)  # the same filter object: added once at most
        self.services = services
        self._issuer_parameter = _IssuerParameter(services.settings.issuer)
        if services.settings.iss_parameter:
            self.register_extension(self._issuer_parameter)
        for method in TLS_METHODS:
            self.register_client_auth_method(method, authenticate_by_certificate(method))
        private_key_jwt = PrivateKeyJWT(
            services.settings.issuer, clock=services.clock, capacity=services.settings.jti_cache_size
        )
        self.register_client_auth_method(PrivateKeyJWT.CLIENT_AUTH_METHOD, private_key_jwt)

    # --- the integration contract ---------------------------------------------------------------------------------

    def create_oauth2_request(self, request: HttpRequest | StarletteOAuth2Request) -> StarletteOAuth2Request:
        return request if isinstance(request, StarletteOAuth2Request) else StarletteOAuth2Request(request)

    def create_json_request(self, request: HttpRequest) -> StarletteJsonRequest:
        return StarletteJsonRequest(request)

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> OAuthResponse:
        return OAuthResponse(status, body, list(headers))

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """authlib's signal hook (Flask's blinker); nothing listens here."""

    def query_client(self, client_id: str) -> Client | None:
        registration = self.services.settings.client(client_id) if isinstance(client_id, str) else None
        return None if registration is None else Client(registration)

    def save_token(self, token: Any, request: Any) -> None:
        """Nothing to do: ``TokenIssuer`` persists tokens as it mints them, where rotation must be atomic."""

    # --- typed entry points (call through run_in_thread) ----------------------------------------------------------

    def consent_grant(self, http: HttpRequest, session: BrowserSession | None) -> ConsentGrant:
        """Validate an authorization request; raises ``OAuth2Error`` (with ``redirect_uri`` set when the client
        and its redirect URI check out, so the error may be sent there; RFC 6749 4.1.2.1)."""
        return ConsentGrant(self.get_consent_grant(http, session))

    def authorization_response(self, consent: ConsentGrant, subject: Subject) -> OAuthResponse:
        """Issue the code and redirect back (``code``, ``state``, ``iss``)."""
        grant = consent.grant
        response: OAuthResponse = self.create_authorization_response(grant.request, subject, grant)
        return response

    def authorization_error(self, http: HttpRequest, error: OAuth2Error) -> OAuthResponse:
        """The error redirect for an error that carries a verified ``redirect_uri``, with ``iss`` (RFC 9207 2)."""
        response: OAuthResponse = self.handle_error_response(self.create_oauth2_request(http), error)
        if self.services.settings.iss_parameter:
            self._issuer_parameter.add_issuer_parameter(self, response)
        return response

    def authenticate_pushing_client(self, http: HttpRequest) -> str:
        """The ``client_id`` of a PAR request's client, authenticated as at the token endpoint (RFC 9126 2.1);
        raises ``OAuth2Error``. A public client cannot push (it has nothing to authenticate with)."""
        methods = ["client_secret_basic", "client_secret_post", PrivateKeyJWT.CLIENT_AUTH_METHOD, *TLS_METHODS]
        client = self.authenticate_client(self.create_oauth2_request(http), methods, "pushed_authorization_request")
        return str(client.client_id)

    def token_response(self, http: HttpRequest) -> OAuthResponse:
        response: OAuthResponse = self.create_token_response(http)
        return response

    def revocation_response(self, http: HttpRequest) -> OAuthResponse:
        response: OAuthResponse = self.create_endpoint_response("revocation", http)
        return response

    def end_session_request(self, http: HttpRequest) -> EndSessionRequest:
        """Validate an RP-initiated logout request; raises ``OAuth2Error`` (bad ``id_token_hint``)."""
        return self.validate_endpoint_request("end_session", http)

    def end_session_response(self, validated: EndSessionRequest) -> OAuthResponse | None:
        """End the session the request names; the redirect to ``post_logout_redirect_uri`` when allowed."""
        response: OAuthResponse | None = self.create_endpoint_response("end_session", validated)
        return response
