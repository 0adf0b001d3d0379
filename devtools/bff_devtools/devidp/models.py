"""The objects authlib asks its hooks for, duck-typing its model mixins (``ClientMixin``,
``AuthorizationCodeMixin``, ``TokenMixin``) over the IdP's own records. Not subclassed: authlib only calls these
methods, and plain classes keep mypy's view of them exact.
"""

from __future__ import annotations

import hmac
from typing import Any

from bff_devtools.acr import amr
from bff_devtools.devidp.families import LoadedFamily
from bff_devtools.devidp.records import AuthorizationCode
from bff_devtools.devidp.settings import ClientRegistration

#: What a confidential client may authenticate with at the token and revocation endpoints (RFC 6749 2.3.1).
SECRET_METHODS = ("client_secret_basic", "client_secret_post")


class Client:
    """``ClientMixin`` over a :class:`ClientRegistration`."""

    def __init__(self, registration: ClientRegistration) -> None:
        self.registration = registration

    @property
    def client_id(self) -> str:
        return self.registration.client_id

    @property
    def client_metadata(self) -> dict[str, Any]:
        """Read by authlib's RP-initiated logout endpoint for ``post_logout_redirect_uris``."""
        return {"post_logout_redirect_uris": list(self.registration.post_logout_redirect_uris)}

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> None:
        """None: ``redirect_uri`` is required (OpenID Connect Core 3.1.2.1), never guessed."""
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        """The requested scopes this client may have, in the requested order; all of its scopes if none were
        requested (RFC 6749 3.3). Unknown ones are dropped, as OpenID Connect Core 3.1.2.1 says to ignore them."""
        allowed = self.registration.scope.split()
        if not scope:
            return " ".join(allowed)
        return " ".join(s for s in dict.fromkeys(scope.split()) if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        """Exact string match (RFC 9700 4.1.3): no prefixes, no wildcards, no normalisation."""
        return redirect_uri in self.registration.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        secret = self.registration.client_secret
        if secret is None:
            return False
        return hmac.compare_digest(client_secret.encode("utf-8"), secret.encode("utf-8"))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        """A confidential client must use its secret, or its registered certificate method (RFC 8705 2); a public
        client has none to use (RFC 6749 2.1)."""
        registered = self.registration.token_endpoint_auth_method
        if registered is not None:
            return method == registered
        return method == "none" if self.registration.is_public else method in SECRET_METHODS

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in self.registration.grant_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.registration.grant_types


class StoredCode:
    """``AuthorizationCodeMixin`` (with OpenID Connect's additions) over an :class:`AuthorizationCode`."""

    def __init__(self, record: AuthorizationCode) -> None:
        self.record = record
        # Read by authlib's CodeChallenge extension (RFC 7636 4.6).
        self.code_challenge = record.code_challenge
        self.code_challenge_method = record.code_challenge_method

    def get_redirect_uri(self) -> str:
        return self.record.redirect_uri

    def get_scope(self) -> str:
        return self.record.scope

    def get_nonce(self) -> str | None:
        return self.record.nonce

    def get_auth_time(self) -> int:
        return self.record.auth_time

    def get_acr(self) -> str:
        return self.record.acr

    def get_amr(self) -> list[str]:
        return amr(self.record.acr)  # RFC 8176 2


class RefreshCredential:
    """``TokenMixin`` for the refresh token grant: the family a presented refresh token belongs to."""

    def __init__(self, loaded: LoadedFamily) -> None:
        self.loaded = loaded

    def check_client(self, client: Client) -> bool:
        """RFC 6749 6: the refresh token must have been issued to the authenticated client."""
        return self.loaded.family.client_id == client.client_id

    def get_scope(self) -> str:
        return self.loaded.family.scope
