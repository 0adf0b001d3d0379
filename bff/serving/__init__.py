"""How ``bff serve`` runs uvicorn: the settings, bff's HTTP/1.1 protocol, its transport and its edge limits.

- ``settings``: :func:`uvicorn_settings`, the one source of the uvicorn settings of ``bff serve``, the demo and the
  test servers;
- ``httptools_protocol``: :class:`CoalescingHttpToolsProtocol`, uvicorn's httptools protocol enforcing the limits;
- ``transport``: :class:`CoalescingTransport`, one send per connection per event-loop turn;
- ``limits``: :class:`EdgeLimits`, the ``[server]`` limits in the protocol's terms;
- ``server``: :class:`DrainingServer`, uvicorn's server with the graceful shutdown (drain, close, deadline, exit 0);
- ``supervisor``: :class:`Supervisor`, ``--workers N`` processes on one socket, closed on the stop signal;
- ``runner``: :func:`serve`, what ``bff serve`` runs.

Only the CLI (and the developer tools that run bff) import this package; uvicorn is imported nowhere else.
"""

from __future__ import annotations

from bff.serving.httptools_protocol import CoalescingHttpToolsProtocol
from bff.serving.limits import DEFAULT_LIMITS, EdgeLimits
from bff.serving.runner import serve
from bff.serving.server import DrainingServer
from bff.serving.settings import uvicorn_settings
from bff.serving.supervisor import Supervisor
from bff.serving.transport import FLUSH_AT, CoalescingTransport

__all__ = [
    "DEFAULT_LIMITS",
    "FLUSH_AT",
    "CoalescingHttpToolsProtocol",
    "CoalescingTransport",
    "DrainingServer",
    "EdgeLimits",
    "Supervisor",
    "serve",
    "uvicorn_settings",
]
