"""The data plane's HTTP side: the raw ASGI app that forwards ``/api/...`` calls, and the request policy it applies.

One module per job, read in the order a request takes:

- ``asgi``: :class:`Proxy`, the ASGI entry (what each request goes through, step by step);
- ``dpop_retry``: a DPoP route's proof and authorization headers and its ``use_dpop_nonce`` replay (RFC 9449);
- ``paths``: the allow-list on the raw path and query;
- ``routes``: a configured route, precomputed (prefix, methods, header policy, transport options);
- ``csrf``: the request guards against cross-site request forgery;
- ``headers``: header hygiene in both directions and the ``X-Forwarded-*`` policy;
- ``request_body``: the browser's body, counted against ``max_body`` and kept for a replay;
- ``disconnect``: noticing that the browser left, to abandon the upstream request;
- ``responses``: JSON error answers in raw ASGI;
- ``outage_log``: operational refusals (503) logged per cause, aggregated.

The control plane reuses the CSRF guard and the error answers, and the dev-server relay reuses the header policy, so
this package sits one layer below ``bff.endpoints`` and ``bff.frontend``; the upstream client below it is
``bff.upstream``. Callers import this package (``from bff.proxy import Proxy``), not its modules.
"""

from __future__ import annotations

from bff.proxy.asgi import BearerProvider, ErrorHeaders, Proxy
from bff.proxy.csrf import check_csrf, check_navigation
from bff.proxy.headers import REQUEST_DROP, read_request_headers, response_headers
from bff.proxy.responses import NO_STORE, error_headers, error_payload, send_error, send_json

__all__ = [
    "NO_STORE",
    "REQUEST_DROP",
    "BearerProvider",
    "ErrorHeaders",
    "Proxy",
    "check_csrf",
    "check_navigation",
    "error_headers",
    "error_payload",
    "read_request_headers",
    "response_headers",
    "send_error",
    "send_json",
]
