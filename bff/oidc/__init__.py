"""OpenID Connect for bff: discovery, the JWKS cache, ID and logout token validation, PKCE and the OAuth client.

The only package that uses joserfc. It knows nothing of sessions; ``bff.tokens`` joins the two.

- ``discovery``: :func:`fetch_metadata` and :class:`ProviderMetadata` (OpenID Connect Discovery 1.0)
- ``jwks``: :class:`JwksCache`, keys from the ``jwks_uri`` only; an unknown ``kid`` refetches at once for a token
  from the token endpoint, rate-limited for one from outside (:class:`TokenSource`)
- ``id_token``: :func:`validate_id_token` (Core 3.1.3.7) and :func:`validate_logout_token` (Back-Channel Logout 2.6)
- ``pkce``: ``code_verifier``/``code_challenge`` (RFC 7636), ``state`` and ``nonce``
- ``client``: :class:`OIDCClient`, the token, revocation and end-session endpoints, with IdP answers mapped to
  bff's errors; ``client_auth``: the client's authentication and the POST every back-channel call goes through
- ``authorization``: a login's authorization request, plain, signed (``request_object``, RFC 9101) or pushed
  (``par``, RFC 9126); ``profiles``: what ``[oidc] par``, ``request_object`` and ``profile`` ask of the metadata
"""
