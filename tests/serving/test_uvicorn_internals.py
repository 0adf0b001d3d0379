"""The uvicorn internals ``bff.serving`` builds on, checked so that a new uvicorn that moves them fails here, loudly,
naming what changed, instead of quietly breaking the edge limits or the coalescing transport.

``CoalescingHttpToolsProtocol`` subclasses uvicorn's ``HttpToolsProtocol``, and ``DrainingServer`` its ``Server``;
neither is uvicorn's public API:

- it extends methods (calling ``super()``) and calls helpers: each must exist with the parameters bff passes;
- it replaces two methods with its own copies (``data_received``, ``on_response_complete``) and hands the real
  transport to ``handle_websocket_upgrade`` through ``self.transport``: the source of those three is pinned by a
  digest, so any change upstream is read against bff's copy before the digest is updated;
- it reads attributes of the protocol, of its request cycle, of its flow control and of the server state: each is
  looked for on a live uvicorn connection over a real socket pair;
- ``DrainingServer`` replaces ``capture_signals``, ``handle_exit``, ``on_tick`` and ``shutdown`` and relies on the
  order in which ``serve``/``_serve``/``main_loop`` call them and on ``HttpToolsProtocol.shutdown`` (idle: close;
  answering: ``keep_alive = False``): their sources are pinned, and a live server is stopped through them.

Every check collects all its problems and fails once with the list. ``pyproject.toml`` bounds uvicorn from above;
raising the bound is done by installing the next minor and making this module pass.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import importlib.metadata
import inspect
import signal
import socket
import textwrap
import tomllib
from collections import deque
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.version import Version
from uvicorn.config import Config as UvicornConfig
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import Server, ServerState

from bff.config import ServerSettings
from bff.endpoints.health import Drain
from bff.serving import CoalescingHttpToolsProtocol, DrainingServer
from bff.types import Receive, Scope, Send

BOUND = 5.0  # seconds a test waits for something that should happen at once; only a failure waits this long
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"

#: What bff imports from uvicorn: module -> names.
IMPORTED = {
    "uvicorn.config": ("Config",),
    "uvicorn.protocols.http.httptools_impl": ("HttpToolsProtocol", "STATUS_LINE", "RequestResponseCycle"),
    "uvicorn.server": ("ServerState", "Server"),
}

#: The methods of ``Server`` bff's ``DrainingServer`` overrides or calls, with their parameters; and
#: ``Config.bind_socket``, which its supervisor calls.
SERVER_SIGNATURES = {
    "__init__": ("self", "config"),
    "run": ("self", "sockets"),
    "serve": ("self", "sockets"),
    "startup": ("self", "sockets"),
    "main_loop": ("self",),
    "on_tick": ("self", "counter"),
    "capture_signals": ("self",),
    "handle_exit": ("self", "sig", "frame"),
    "shutdown": ("self", "sockets"),
}

#: uvicorn methods whose behaviour ``DrainingServer`` depends on without overriding them: their source digests.
SERVER_PINNED_SOURCES = {
    # serve() wraps _serve() in capture_signals(): bff's handlers are the ones installed.
    "Server.serve": "20557f5f925b5a3c",
    # _serve(): startup, then main_loop unless should_exit, then shutdown(sockets) if started.
    "Server._serve": "808a98031a4105f5",
    # main_loop() asks on_tick() every 0.1 s whether to stop: bff's drain ends there.
    "Server.main_loop": "425d26add0e59678",
    # shutdown() of a connection, which bff's extends: idle closes now; answering gets keep_alive = False.
    "HttpToolsProtocol.shutdown": "4822ef10fa982b12",
}

#: The methods of ``HttpToolsProtocol`` bff extends or calls, with the parameters it passes (``self`` included).
SIGNATURES = {
    "__init__": ("self", "config", "server_state", "app_state", "_loop"),
    "connection_made": ("self", "transport"),
    "connection_lost": ("self", "exc"),
    "data_received": ("self", "data"),
    "on_message_begin": ("self",),
    "on_headers_complete": ("self",),
    "on_message_complete": ("self",),
    "on_response_complete": ("self",),
    "handle_websocket_upgrade": ("self",),
    "_should_upgrade": ("self",),
    "_unsupported_upgrade_warning": ("self",),
    "_start_asgi_task": ("self", "cycle", "app"),
    "shutdown": ("self",),
}

#: The methods whose behaviour bff's protocol copies or depends on line by line: the sha256 (first 16 hex digits) of
#: their dedented source in the uvicorn minor pyproject allows.
PINNED_SOURCES = {
    # bff's data_received feeds the parser itself (bounded), with uvicorn's error and upgrade handling.
    "data_received": "02c2572f1df55907",
    # bff's on_response_complete is uvicorn's with its own deadline in place of the keep-alive timer.
    "on_response_complete": "5684fd801d0683ac",
    # bff swaps self.transport for the real transport before calling it: it must hand self.transport on.
    "handle_websocket_upgrade": "9eedd6b3bd8e5780",
}

#: Attributes bff reads on a live connection: name -> the type they must have.
PROTOCOL_ATTRIBUTES: dict[str, type | tuple[type, ...]] = {
    "loop": asyncio.AbstractEventLoop,
    "logger": object,
    "transport": object,
    "parser": object,
    "connections": set,
    "server_state": ServerState,
    "flow": object,
    "pipeline": deque,
    "url": bytes,
    "headers": list,
    "cycle": object,
}
CYCLE_ATTRIBUTES = ("response_complete", "response_started", "keep_alive", "waiting_for_100_continue")
FLOW_ATTRIBUTES = ("read_paused", "resume_reading", "pause_reading")
STATE_ATTRIBUTES: dict[str, type | tuple[type, ...]] = {"default_headers": list, "total_requests": int}


def report(problems: list[str]) -> str:
    version = importlib.metadata.version("uvicorn")
    lines = "\n".join(f"  - {problem}" for problem in problems)
    return f"uvicorn {version} changed internals that bff.serving.httptools_protocol relies on:\n{lines}"


def import_problems() -> list[str]:
    problems = []
    for module_name, names in IMPORTED.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            problems.append(f"module {module_name} is gone")
            continue
        problems += [f"{module_name}.{name} is gone" for name in names if not hasattr(module, name)]
    return problems


def signature_problems(protocol_class: type) -> list[str]:
    problems = []
    for name, expected in SIGNATURES.items():
        method = getattr(protocol_class, name, None)
        if not callable(method):
            problems.append(f"HttpToolsProtocol.{name} is gone")
            continue
        found = tuple(inspect.signature(method).parameters)
        if found != expected:
            problems.append(f"HttpToolsProtocol.{name} takes {found}, bff passes {expected}")
    return problems


def source_digest(method: Any) -> str:
    return hashlib.sha256(textwrap.dedent(inspect.getsource(method)).encode("utf-8")).hexdigest()[:16]


def source_problems(protocol_class: type) -> list[str]:
    problems = []
    for name, digest in PINNED_SOURCES.items():
        method = getattr(protocol_class, name, None)
        if method is None:
            problems.append(f"HttpToolsProtocol.{name} is gone")
        elif (found := source_digest(method)) != digest:
            problems.append(
                f"HttpToolsProtocol.{name} changed (digest {found}, pinned {digest}): read it against bff's "
                "CoalescingHttpToolsProtocol, carry the change over, then pin the new digest"
            )
    return problems


def missing(owner: str, obj: object, attributes: dict[str, type | tuple[type, ...]]) -> list[str]:
    problems = []
    for name, kind in attributes.items():
        if not hasattr(obj, name):
            problems.append(f"{owner}.{name} is gone")
        elif not isinstance(getattr(obj, name), kind):
            problems.append(f"{owner}.{name} is a {type(getattr(obj, name)).__name__}, not a {kind}")
    return problems


def test_the_installed_uvicorn_is_the_minor_pyproject_bounds() -> None:
    requirements = [Requirement(text) for text in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]]
    [uvicorn] = [r for r in requirements if r.name == "uvicorn"]
    installed = Version(importlib.metadata.version("uvicorn"))
    assert any(spec.operator == "<" for spec in uvicorn.specifier), "uvicorn must be bounded from above in pyproject"
    assert uvicorn.specifier.contains(installed), f"uvicorn {installed} is outside pyproject's {uvicorn.specifier}"


def test_what_bff_imports_from_uvicorn_exists() -> None:
    problems = import_problems()
    assert not problems, report(problems)
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE

    # bff's edge answers are written with uvicorn's status lines.
    wrong = [status for status in (400, 408, 431, 503) if not STATUS_LINE[status].startswith(b"HTTP/1.1 %d " % status)]
    assert not wrong, report([f"STATUS_LINE[{status}] is {STATUS_LINE[status]!r}" for status in wrong])


def test_the_methods_bff_extends_or_calls_take_what_bff_passes() -> None:
    problems = signature_problems(HttpToolsProtocol)
    assert not problems, report(problems)
    assert issubclass(CoalescingHttpToolsProtocol, HttpToolsProtocol)


def test_the_methods_bff_copies_are_unchanged() -> None:
    problems = source_problems(HttpToolsProtocol)
    assert not problems, report(problems)


def server_problems() -> list[str]:
    from uvicorn.config import Config
    from uvicorn.server import Server

    problems = []
    for name, expected in SERVER_SIGNATURES.items():
        method = getattr(Server, name, None)
        if not callable(method):
            problems.append(f"Server.{name} is gone")
        elif (found := tuple(inspect.signature(method).parameters)) != expected:
            problems.append(f"Server.{name} takes {found}, bff passes {expected}")
    if tuple(inspect.signature(Config.bind_socket).parameters) != ("self",):
        problems.append("Config.bind_socket takes parameters now")
    owners = {"Server": Server, "HttpToolsProtocol": HttpToolsProtocol}
    for qualified, digest in SERVER_PINNED_SOURCES.items():
        owner, name = qualified.split(".")
        method = getattr(owners[owner], name, None)
        if method is None:
            problems.append(f"{qualified} is gone")
        elif (now := source_digest(method)) != digest:
            problems.append(
                f"{qualified} changed (digest {now}, pinned {digest}): read it against bff.serving.server's "
                "DrainingServer, carry the change over, then pin the new digest"
            )
    return problems


def test_the_server_methods_bff_overrides_or_relies_on_are_unchanged() -> None:
    problems = server_problems()
    assert not problems, report(problems)
    assert issubclass(DrainingServer, Server)
    assert {"capture_signals", "handle_exit", "on_tick", "shutdown"} <= set(vars(DrainingServer))


async def test_a_live_server_drains_closes_and_cuts_a_stream_through_the_methods_bff_overrides() -> None:
    """A ``DrainingServer`` on a real socket, told to stop as a signal would: ``/readyz``'s flag is set at once, the
    listener still accepts during the drain, then refuses; a stream still running at the deadline is cut; the
    lifespan's shutdown runs; ``serve`` returns (no signal raised again)."""
    drain = Drain()
    lifespan_ended = asyncio.Event()
    chunks = 0

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal chunks
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            lifespan_ended.set()
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await receive()  # the (empty) body
        left = asyncio.ensure_future(receive())  # then only the disconnect
        while not left.done():  # an endless stream; only the deadline ends it
            chunks += 1
            await send({"type": "http.response.body", "body": b"x", "more_body": True})
            await asyncio.sleep(0.01)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = UvicornConfig(app=app, log_config=None, lifespan="on", loop="none")
    settings = ServerSettings(drain_delay=0.3, shutdown_timeout=0.5)
    server = DrainingServer(config, settings=settings, drain=drain)
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(BOUND):
            while not server.started:  # noqa: ASYNC110 - uvicorn's Server has no event for it
                await asyncio.sleep(0.01)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
            server.handle_exit(signal.SIGTERM, None)
            assert drain.started
            _, late = await asyncio.open_connection("127.0.0.1", port)  # accepted during the drain
            late.close()
            while drain.deadline is None:  # noqa: ASYNC110 - set by the server, polled as uvicorn does
                await asyncio.sleep(0.01)
            assert drain.deadline > loop.time()  # the close phase began: shutdown_timeout from now
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection("127.0.0.1", port)
            assert not reader.at_eof()
            while await reader.read(65536):
                pass  # the stream runs until the deadline cuts it
            writer.close()
            await serving
        assert lifespan_ended.is_set()
        assert chunks > 0
    finally:
        serving.cancel()
        sock.close()


def test_the_checks_name_what_changed() -> None:
    """The checks above can fail: a protocol with a helper gone, a parameter renamed and a copied method edited."""

    class Changed(HttpToolsProtocol):
        _start_asgi_task = None  # type: ignore[assignment]

        def connection_lost(self, error: Exception | None) -> None:
            super().connection_lost(error)

        def on_response_complete(self) -> None:
            super().on_response_complete()

    assert signature_problems(Changed) == [
        "HttpToolsProtocol.connection_lost takes ('self', 'error'), bff passes ('self', 'exc')",
        "HttpToolsProtocol._start_asgi_task is gone",
    ]
    [changed] = source_problems(Changed)
    assert changed.startswith("HttpToolsProtocol.on_response_complete changed")
    assert missing("cycle", object(), {"keep_alive": bool}) == ["cycle.keep_alive is gone"]


async def test_a_live_connection_has_the_attributes_bff_reads() -> None:
    """A real uvicorn connection over a socket pair, mid-request and after its answer."""
    started, answer = asyncio.Event(), asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        started.set()
        await answer.wait()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    loop = asyncio.get_running_loop()
    config = UvicornConfig(app=app, log_config=None, lifespan="off")
    state = ServerState()
    server_side, client_side = socket.socketpair()
    client_side.setblocking(False)
    transport, protocol = await loop.connect_accepted_socket(
        lambda: HttpToolsProtocol(config, state, {}, loop), server_side
    )
    try:
        await loop.sock_sendall(client_side, b"GET /x HTTP/1.1\r\nHost: bff.test\r\n\r\n")
        async with asyncio.timeout(BOUND):
            await started.wait()  # the app runs once the head is parsed and the cycle made
        problems = missing("HttpToolsProtocol", protocol, PROTOCOL_ATTRIBUTES)
        problems += missing("ServerState", state, STATE_ATTRIBUTES)
        if not problems:
            problems += [f"FlowControl.{name} is gone" for name in FLOW_ATTRIBUTES if not hasattr(protocol.flow, name)]
            problems += [
                f"RequestResponseCycle.{n} is gone" for n in CYCLE_ATTRIBUTES if not hasattr(protocol.cycle, n)
            ]
            if protocol not in protocol.connections:
                problems.append("HttpToolsProtocol.connections no longer holds the open connections")
            if protocol.parser.get_method() != b"GET":
                problems.append("HttpToolsProtocol.parser.get_method() no longer returns the method")
            cycle = protocol.cycle
            if (cycle.response_started, cycle.response_complete, cycle.keep_alive) != (False, False, True):
                problems.append("RequestResponseCycle's response_started/response_complete/keep_alive changed meaning")
        assert not problems, report(problems)

        answer.set()
        async with asyncio.timeout(BOUND):
            reply = await loop.sock_recv(client_side, 4096)  # the answer's end is counted before its bytes leave
        assert reply.startswith(b"HTTP/1.1 204 ")
        assert protocol.cycle.response_complete, report(
            ["RequestResponseCycle.response_complete is not set at the end"]
        )
        assert state.total_requests == 1, report(["ServerState.total_requests does not count answered requests"])
    finally:
        transport.close()
        client_side.close()
        await asyncio.sleep(0)  # let the transport finish closing


@pytest.mark.parametrize("name", sorted(PINNED_SOURCES))
def test_bff_overrides_every_method_it_pins(name: str) -> None:
    """A pinned method is one bff's protocol defines itself: else pinning it would guard nothing."""
    assert name in vars(CoalescingHttpToolsProtocol)
