"""Bearer tokens for proxied requests: the only package that joins sessions and OIDC (see ``manager``).

- ``manager``: ``TokenManager``, the proxy's ``BearerProvider``: which token a request sends, under which policy.
- ``refresh``: ``Refresher``, one session's refresh, single-flight in the process and across processes (store lock
  with a renewed lease), reload-and-recheck, compare-and-set write.
- ``rotation``: ``Rotation``, what a refresh grant makes of the login's tokens or a route's own (or a stored refresh
  result, when a session write was lost); ``exchange_flight``: ``Exchanger``, a route's token exchanged (RFC 8693)
  in the same flight; ``spending``: ``Spender``, a refresh token presented to the IdP once (the spending mark) and
  its answer stored however the store fails over; ``flight``: what they share.
- ``idp_probe``: ``IdPProbe``, refreshes fail fast while the IdP is down; one task notices it answer again.
- ``client_credentials``: ``ClientCredentials``, bff's own tokens for ``client`` routes (RFC 6749 4.4).
- ``route_tokens``: which of a session's token sets a route uses (RFC 8707), and when one is due for refresh.
"""

from __future__ import annotations

from bff.tokens.manager import TokenManager, cookie_header
from bff.tokens.route_tokens import route_token_key

__all__ = ["TokenManager", "cookie_header", "route_token_key"]
