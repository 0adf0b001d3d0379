"""OpenID Connect for bff: discovery, the JWKS cache, ID and logout token validation, PKCE and the OAuth client.

The only package that uses joserfc. It knows nothing of sessions; ``bff.tokens`` joins the two.

- ``discovery``: :func:`fetch_metadata` and :class:`ProviderMetadata` (OpenID Connect Discovery 1.0)
- ``jwks``: :class:`JwksCache`, keys from the ``jwks_uri`` only; an unknown ``kid`` refetches at once for a token
  from the token endpoint, rate-limited for one from outside (:class:`TokenSource`)
- ``id_token``: :func:`validate_id_token` (Core 3.1.3.7) and :func:`validate_logout_token` (Back-Channel Logout 2.6)
- ``pkce``: ``code_verifier``/``code_challenge`` (RFC 7636), ``state`` and ``nonce``
- ``client``: :class:`OIDCClient`, the token, revocation and end-session endpoints, with IdP answers mapped to
  bff's errors
"""
