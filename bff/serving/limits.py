"""The ``[server]`` edge limits the protocol enforces, in the protocol's own terms."""

from __future__ import annotations

from dataclasses import dataclass

from bff.config import ServerSettings


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    """The ``[server]`` limits the protocol enforces (see the module docstring)."""

    max_connections: int
    header_timeout: float
    keep_alive_timeout: float
    body_timeout: float
    max_head_bytes: int
    max_head_fields: int

    @classmethod
    def of(cls, server: ServerSettings) -> EdgeLimits:
        return cls(
            max_connections=server.max_connections,
            header_timeout=server.header_timeout,
            keep_alive_timeout=server.keep_alive_timeout,
            body_timeout=server.body_timeout,
            max_head_bytes=server.max_request_header_size,
            max_head_fields=server.max_request_headers,
        )


DEFAULT_LIMITS = EdgeLimits.of(ServerSettings())
