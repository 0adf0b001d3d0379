"""Type aliases and small protocols shared by every layer. A leaf module: it imports nothing from the package."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol, TypeAlias

#: A JSON object as decoded by ``json.loads``; ``Any`` stays at this edge.
JSONObject: TypeAlias = dict[str, Any]

# ASGI, spelled as Starlette spells it.
Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]


class Clock(Protocol):
    """Wall-clock time in seconds since the epoch. Injected so tests control expiry without sleeping."""

    def __call__(self) -> float: ...


def system_clock() -> float:
    return time.time()


#: Scope key: the path prefix of the ``[[frontends]]`` entry that took the request (stripped from its path).
PATH_PREFIX = "bff.path_prefix"
