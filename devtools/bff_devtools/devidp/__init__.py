"""``bff devidp``: a DEVELOPMENT identity provider, not for production.

The reference OpenID Provider that bff's demo and integration tests run against, built to the practices bff
relies on, so that bff can be shown (and tested) against an IdP that does things right:

* authorization code flow with PKCE required (S256 only) and RFC 9207 ``iss`` in every authorization response;
  pushed authorization requests (RFC 9126, single-use ``request_uri``) and signed request objects (RFC 9101),
  either of which it can require; ``private_key_jwt`` for clients registered with a JWK Set; a request object or
  client assertion is accepted once (its ``jti``, remembered until its ``exp`` in a bounded cache);
* asymmetric signing only (ES256, or RS256), keys in files (0600), ``kid`` = RFC 7638 thumbprint, rotation that
  keeps retired keys published until their tokens expire;
* RFC 9068 JWT access tokens, small and without personal data; opaque refresh tokens stored as hashes, rotated on
  every use, with reuse detection that revokes the whole family (RFC 9700 4.14.2);
* revocation (RFC 7009) of refresh tokens (the family) and access tokens (a public blocklist of ``jti``);
* RP-initiated logout and back-channel logout (OpenID Connect); a per-user token version that a change of
  password bumps;
* a small admin page (demo mode) to watch and revoke token families, change passwords and rotate the key.

It stands beside bff's layers, in the ``bff-devtools`` distribution: nothing in ``bff`` imports it (an
import-linter contract); ``bff devidp`` reaches it through the ``bff.commands`` entry point, and the tests import
it. Standards work is authlib's (``AuthorizationServer``, its grants, ``CodeChallenge``,
``OpenIDCode``, ``RevocationEndpoint``, ``EndSessionEndpoint``, ``IssuerParameter``); JOSE work is joserfc's.

Modules, from the bottom up: ``settings``, ``passwords``, ``keys``, ``minter`` (JWTs), ``records`` (store keys
and records), ``storage`` (codes, login forms, blocklist), ``families`` (refresh-token families), ``accounts``,
``backchannel``, ``sessions`` (the IdP's browser sessions), ``issuer`` (what the token endpoints do), ``models``,
``client_keys`` (``private_key_jwt``, request objects; their used ``jti`` values in ``bff_devtools.replay``),
``oauth`` (the Starlette adapter for authlib), ``grants``, ``pages`` (HTML), ``par``, ``login``, ``endpoints``,
``admin``, ``app`` (composition), ``cli``.

    from bff_devtools.devidp import DevIdPSettings, ClientRegistration, create_devidp_app

    settings = DevIdPSettings(issuer="http://localhost:9000", data_dir=Path(".bff-data/devidp"), clients=(
        ClientRegistration("spa-bff", "a-secret-of-16-chars-or-more",
                           redirect_uris=("http://localhost:8000/bff/callback",)),))
    app = create_devidp_app(settings)
"""

from __future__ import annotations

from bff_devtools.devidp.app import create_devidp_app
from bff_devtools.devidp.keys import rotate_key
from bff_devtools.devidp.settings import ClientRegistration, DemoUser, DevIdPSettings, default_users

__all__ = ["ClientRegistration", "DemoUser", "DevIdPSettings", "create_devidp_app", "default_users", "rotate_key"]
