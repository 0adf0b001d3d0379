"""The authorization request of a login (OpenID Connect Core 3.1.2.1, RFC 7636 4.3), sent as the IdP's metadata
and ``[oidc]`` decide (``bff.oidc.profiles.AuthorizationPlan``): plain parameters in the browser's URL, a signed
request object (RFC 9101), pushed to the PAR endpoint first (RFC 9126), or both.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bff.config import OIDCSettings
from bff.oidc.par import PushedAuthorization
from bff.oidc.request_object import RequestObjectSigner

_NO_PARAMS: Mapping[str, str] = MappingProxyType({})


def with_query(url: str, params: Mapping[str, str]) -> str:
    """``url`` with ``params`` added to its query; its existing parameters are kept unless ``params`` sets them."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query.extend(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def authorization_params(
    settings: OIDCSettings,
    *,
    state: str,
    nonce: str,
    code_challenge: str,
    redirect_uri: str,
    extra: Mapping[str, str] = _NO_PARAMS,
    dpop_jkt: str | None = None,
) -> dict[str, str]:
    """The request's parameters. ``extra`` and ``extra_auth_params`` (``prompt``, ``login_hint``, ...) never
    override the protocol parameters, which are set last; ``dpop_jkt`` binds the code to bff's DPoP key."""
    params: dict[str, str] = {**settings.extra_auth_params, **extra}
    params.update(
        response_type="code",
        client_id=settings.client_id,
        redirect_uri=redirect_uri,
        scope=" ".join(settings.scopes),
        state=state,
        nonce=nonce,
        code_challenge=code_challenge,
        code_challenge_method="S256",
    )
    params.pop("dpop_jkt", None)
    if dpop_jkt is not None:
        params["dpop_jkt"] = dpop_jkt  # RFC 9449 10: the code is redeemed with this key only
    return params


class AuthorizationRequests:
    """Builds the URL the browser is sent to for one login; pushes the request first when PAR is on."""

    def __init__(
        self,
        settings: OIDCSettings,
        authorization_endpoint: str,
        *,
        par: PushedAuthorization | None,
        signer: RequestObjectSigner | None,
        dpop_jkt: str | None = None,
    ) -> None:
        self._settings = settings
        self._dpop_jkt = dpop_jkt
        self._endpoint = authorization_endpoint
        self._par = par
        self._signer = signer

    @property
    def pushed(self) -> bool:
        return self._par is not None

    @property
    def signed(self) -> bool:
        return self._signer is not None

    async def url(
        self,
        *,
        state: str,
        nonce: str,
        code_challenge: str,
        redirect_uri: str,
        extra: Mapping[str, str] = _NO_PARAMS,
    ) -> str:
        """The authorization URL of a login (``extra``: e.g. a step-up's ``acr_values``, RFC 9470): raises
        ``PushedAuthorizationFailed`` or ``IdPUnavailable`` when the push fails."""
        params = authorization_params(
            self._settings,
            state=state,
            nonce=nonce,
            code_challenge=code_challenge,
            redirect_uri=redirect_uri,
            extra=extra,
            dpop_jkt=self._dpop_jkt,
        )
        client_id = self._settings.client_id
        if self._signer is not None:
            params = self._signer.request(params, pushed=self._par is not None)
        if self._par is None:
            return with_query(self._endpoint, params)
        pushed = await self._par.push(params)
        # RFC 9126 4: the browser carries client_id and request_uri only.
        return with_query(self._endpoint, {"client_id": client_id, "request_uri": pushed.request_uri})
