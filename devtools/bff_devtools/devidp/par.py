"""``POST /par``: pushed authorization requests (RFC 9126), and what ``/authorize`` does with their
``request_uri`` and with signed request objects (RFC 9101).

The push is hostile input. It must be a form without repeated parameters (RFC 9126 2.1), from an authenticated
client (the token endpoint's methods, authlib's client authentication), without a ``request_uri`` of its own, with
the authenticated client's ``client_id`` if any, a registered ``redirect_uri`` and ``response_type=code``; a
``request`` object is verified (``client_keys``; its ``jti`` once, in this IdP's ``replay`` cache) and replaces
the other parameters (RFC 9126 3). A DPoP proof, when
sent, must verify and name the key of any ``dpop_jkt``, which then binds the code (RFC 9449 10.1). The answer
is ``201`` with a fresh ``request_uri`` and ``expires_in`` 60 s.

A ``request_uri`` is used once: ``/authorize`` takes it from the store (GETDEL), so a replayed or shared link
fails. The parameters it stands for are then the request's, and only the client it was pushed by may use it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence

from authlib.oauth2.rfc6749 import OAuth2Error
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bff.session.store import SessionStore
from bff.types import Clock
from bff_devtools.devidp.client_keys import InvalidRequestObject, request_object_replay_cache, verify_request_object
from bff_devtools.devidp.oauth import FORM, DevAuthorizationServer, HttpRequest, run_in_thread
from bff_devtools.devidp.records import pushed_key
from bff_devtools.devidp.settings import DevIdPSettings
from bff_devtools.dpop_proofs import InvalidProof, ProofVerifier, UseNonce

#: RFC 9126 2.2: the URN prefix of a request_uri.
REQUEST_URI_PREFIX = "urn:ietf:params:oauth:request_uri:"
#: RFC 9126 2.2: "a short lifetime ... between 5 and 600 seconds".
PAR_TTL = 60
#: Client authentication fields: they authenticate the push and are not part of the request.
_CLIENT_AUTH_FIELDS = frozenset({"client_secret", "client_assertion", "client_assertion_type"})
NO_STORE = {"Cache-Control": "no-store"}


class RequestRefused(Exception):
    """An authorization request that must not go on: ``error`` (RFC 6749 4.1.2.1 / RFC 9126 2.3) and a message."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


class PushedRequests:
    def __init__(
        self,
        settings: DevIdPSettings,
        server: DevAuthorizationServer,
        store: SessionStore,
        *,
        dpop: ProofVerifier,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._server = server
        self._store = store
        self._dpop = dpop
        self._clock = clock
        # One memory of used request object jtis for PAR and /authorize: an object pushed once cannot be sent again.
        self._replay = request_object_replay_cache(settings.jti_cache_size)

    async def push(self, request: Request) -> Response:
        """RFC 9126 2.1 and 2.2."""
        if request.headers.get("content-type", "").partition(";")[0].strip().lower() != FORM:
            return _error("invalid_request", "a pushed authorization request is a form POST")
        http = await HttpRequest.read(request, issuer=self._settings.issuer)
        names = [name for name, _ in http.params]
        if len(names) != len(set(names)):
            return _error("invalid_request", "a parameter is repeated (RFC 6749 3.1)")
        proofs = request.headers.getlist("dpop")
        used = None
        if proofs:
            try:
                if len(proofs) != 1:
                    return _error("invalid_dpop_proof", "more than one DPoP header")
                used = self._dpop.use(proofs[0], method="POST", url=f"{self._settings.issuer}/par")
            except UseNonce as exc:
                return self._with_nonce(_error("use_dpop_nonce", exc.description))
            except InvalidProof as exc:
                return self._with_nonce(_error("invalid_dpop_proof", exc.description))
        jkt = None if used is None else used.jkt
        try:
            client_id = await run_in_thread(self._server.authenticate_pushing_client, http)
        except OAuth2Error as error:
            if used is not None:
                self._dpop.release(used)  # a client that failed to authenticate holds no jti
            return _error("invalid_client", str(error.description or error.error), status=401)
        params = {name: value for name, value in http.params if name not in _CLIENT_AUTH_FIELDS}
        try:
            pushed = self.checked(client_id, params, pushed=True)
        except RequestRefused as refused:
            return _error(refused.error, refused.description)
        if jkt is not None:
            # RFC 9449 10.1: the proof's key binds the code; a dpop_jkt sent beside it must name that key.
            if dict(pushed).get("dpop_jkt", jkt) != jkt:
                return self._with_nonce(_error("invalid_dpop_proof", "dpop_jkt is not the DPoP proof's key"))
            pushed = [(name, value) for name, value in pushed if name != "dpop_jkt"] + [("dpop_jkt", jkt)]
        request_uri = REQUEST_URI_PREFIX + secrets.token_urlsafe(32)
        await self._store.set(pushed_key(request_uri), json.dumps(pushed).encode(), PAR_TTL)
        answer = JSONResponse({"request_uri": request_uri, "expires_in": PAR_TTL}, status_code=201, headers=NO_STORE)
        return self._with_nonce(answer)

    def _with_nonce(self, response: Response) -> Response:
        """RFC 9449 8 and 8.2: the nonce to use next, when nonces are demanded."""
        if self._dpop.nonces is not None:
            response.headers["DPoP-Nonce"] = self._dpop.nonces.current()
        return response

    def checked(self, client_id: str, params: dict[str, str], *, pushed: bool) -> list[tuple[str, str]]:
        """The parameters of an authorization request from ``client_id``, its request object opened; raises
        :class:`RequestRefused`."""
        if "request_uri" in params:
            raise RequestRefused("invalid_request", "request_uri is not allowed here (RFC 9126 2.1)")
        if params.get("client_id", client_id) != client_id:
            raise RequestRefused("invalid_request", "client_id is not the authenticated client")
        registration = self._settings.client(client_id)
        if registration is None:
            raise RequestRefused("invalid_client", "unknown client")
        if "request" in params:
            try:
                opened = verify_request_object(
                    params["request"],
                    registration,
                    issuer=self._settings.issuer,
                    now=self._clock(),
                    replay=self._replay,
                )
            except InvalidRequestObject as exc:
                raise RequestRefused("invalid_request_object", str(exc)) from exc
            params = dict(opened)
        elif self._settings.require_signed_request_object:
            raise RequestRefused("invalid_request", "this IdP accepts signed request objects only (RFC 9101)")
        if pushed and params.get("redirect_uri") not in registration.redirect_uris:
            raise RequestRefused("invalid_request", "redirect_uri is not registered for the client")
        if pushed and params.get("response_type") != "code":
            raise RequestRefused("unsupported_response_type", "only response_type=code")
        params["client_id"] = client_id
        return list(params.items())

    async def expand(self, params: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """The parameters an authorization request at ``/authorize`` stands for: those pushed under its
        ``request_uri`` (once), or those of its request object; raises :class:`RequestRefused`."""
        given = dict(params)
        client_id = given.get("client_id", "")
        request_uri = given.get("request_uri")
        if request_uri is not None:
            if not self._settings.par or not request_uri.startswith(REQUEST_URI_PREFIX):
                raise RequestRefused("invalid_request_uri", "unknown request_uri")
            raw = await self._store.take(pushed_key(request_uri))
            if raw is None:
                raise RequestRefused("invalid_request_uri", "the request_uri is unknown, expired or already used")
            pushed = [(str(k), str(v)) for k, v in json.loads(raw)]
            if dict(pushed).get("client_id") != client_id:
                raise RequestRefused("invalid_request_uri", "the request_uri was pushed by another client")
            return pushed
        if self._settings.require_pushed_authorization_requests:
            raise RequestRefused("invalid_request", "this IdP accepts pushed authorization requests only (RFC 9126)")
        if "request" in given or self._settings.require_signed_request_object:
            if len(given) != len(params):
                raise RequestRefused("invalid_request", "a parameter is repeated (RFC 6749 3.1)")
            # OpenID Connect Core 6.1: response_type and scope outside must match the object's; RFC 9101 5: only
            # the object's parameters are used.
            opened = dict(self.checked(client_id, given, pushed=False))
            for name in ("response_type", "scope"):
                if name in given and opened.get(name) != given[name]:
                    raise RequestRefused("invalid_request", f"{name} differs from the request object's")
            return list(opened.items())
        return list(params)


def _error(error: str, description: str, *, status: int = 400) -> Response:
    return JSONResponse({"error": error, "error_description": description}, status_code=status, headers=NO_STORE)
