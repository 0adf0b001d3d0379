"""Free TCP ports for servers the tests start as separate processes.

A port the kernel hands out for ``bind(("127.0.0.1", 0))`` comes from the ephemeral range, which every outgoing
connection on the machine also draws its source port from: between the test closing the probe socket and the child
process binding it, a client connection can take it (``EADDRINUSE``). Ports picked below the ephemeral range are
never taken that way; only another server could take one, and the probe bind checks that none holds it now.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, low: int = 20000) -> int:
    """A port no server on 127.0.0.1 listens on now, below the ephemeral range when there is room (else from the
    kernel), and never the same one twice in this process."""
    high = _ephemeral_low()
    rng = random.SystemRandom()
    for _ in range(200) if high - low > 1000 else ():
        port = rng.randrange(low, high)
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    _handed_out.add(port)
    return port
