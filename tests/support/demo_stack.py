"""The whole demo as real servers on loopback: the reference IdP, the demo API and bff (its config from
``bff demo``), with the Redis store. The browser tests drive it in Chromium, others over HTTP."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from bff.app import BffApp
from bff.config import Config, TokenSettings
from bff_devtools.demo.run import DemoOptions, build_apps, build_bff_config
from tests.support.redis_server import RedisProcess, require_redis_server
from tests.support.servers import serve


@dataclasses.dataclass
class Demo:
    url: str
    idp_url: str
    bff: BffApp
    redis_url: str
    options: DemoOptions


def _bound() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def running_demo(
    data_dir: Path, *, access_token_ttl: float, customize: Callable[[Config], Config] | None = None
) -> Iterator[Demo]:
    """The demo with tokens living ``access_token_ttl`` seconds, refreshed 1 s before they expire (the default 30 s
    would refresh every time); ``customize`` changes bff's config."""
    with ExitStack() as stack:
        redis = stack.enter_context(RedisProcess(require_redis_server()))
        socks = [_bound() for _ in range(3)]
        ports = [s.getsockname()[1] for s in socks]
        options = DemoOptions(
            port=ports[0], idp_port=ports[1], api_port=ports[2], redis_url=redis.url, access_token_ttl=access_token_ttl
        )
        idp, api, _ = build_apps(options, data_dir)
        config = dataclasses.replace(build_bff_config(options), tokens=TokenSettings(refresh_leeway=1.0))
        bff = BffApp(config if customize is None else customize(config))
        stack.enter_context(serve(idp, sock=socks[1]))
        stack.enter_context(serve(api, sock=socks[2]))
        stack.enter_context(serve(bff, sock=socks[0]))
        yield Demo(url=options.public_origin, idp_url=options.issuer, bff=bff, redis_url=redis.url, options=options)
