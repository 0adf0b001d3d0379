"""bff: a Backend-for-Frontend reverse proxy.

The browser talks only to its own origin; bff runs the OpenID Connect login, keeps every token server-side behind
an opaque ``__Host-`` cookie, and proxies the SPA's API calls with ``Authorization: Bearer``.
"""

__version__ = "0.1.0"
