"""The data-plane HTTP client: how a proxied request reaches its upstream, and how the answer comes back.

One module per job, read in the order a request takes:

- ``request_head``: the URL's origin and target, and the request head, checked so nothing breaks out of its line;
- ``client``: :class:`UpstreamClient`, the public face: per-route options, send, the resend decision;
- ``proxy``: the forward proxy a route uses (its ``proxy`` key or ``HTTPS_PROXY``/``NO_PROXY``), the CONNECT tunnel;
- ``pool``: the idle keep-alive connections per origin, swept after ``keepalive_timeout``;
- ``connection``: one connection, an ``asyncio.Protocol`` whose answers llhttp (httptools) parses, with the caps;
- ``request_body``: a streamed request body written as declared or chunked;
- ``response``: :class:`UpstreamResponse`, the streamed answer its owner releases or closes.

Callers import this package (``from bff.upstream import UpstreamClient``), not its modules.
"""

from __future__ import annotations

from bff.upstream.client import TransportOptions, UpstreamClient
from bff.upstream.connection import MAX_HEADER_BYTES
from bff.upstream.request_head import RequestBody
from bff.upstream.response import UpstreamResponse

__all__ = ["MAX_HEADER_BYTES", "RequestBody", "TransportOptions", "UpstreamClient", "UpstreamResponse"]
