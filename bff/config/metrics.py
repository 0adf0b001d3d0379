"""``[metrics]``: the separate listener that serves Prometheus ``/metrics`` (off unless ``listen`` is set)."""

from __future__ import annotations

from bff.config.reader import Reader, table
from bff.config.settings import MetricsSettings, ServerSettings

#: Wildcard binds: they overlap every other address on the same port.
_ANY_HOST = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 - compared against, never bound


def read_metrics(root: Reader, server: ServerSettings) -> MetricsSettings:
    r = table(root, "metrics", MetricsSettings)
    listen = r.get("listen", str).strip()
    if listen:
        host, sep, port = listen.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            r.problem("listen", "expected host:port (e.g. 0.0.0.0:9464)")
            listen = ""
        elif int(port) == server.port and (host == server.host or {host, server.host} & _ANY_HOST):
            # The metrics must never be reachable through the public origin, so never on the public listener.
            r.problem("listen", "is the [server] listen address; give the metrics a port of their own")
            listen = ""
        else:
            listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    r.finish()
    return MetricsSettings(listen=listen)
