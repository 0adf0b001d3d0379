"""Private ``redis-server`` processes for the tests, on loopback, with nothing persisted.

``session_redis_url`` gives the suite its Redis: ``BFF_TEST_REDIS_URL`` when set (CI with a Redis service), else a
``redis-server`` started for the session. ``RedisProcess`` is one server that a test can stop and start again on
the same port, to check that bff survives Redis going away and coming back. ``redis_cluster`` (a one-node cluster
owning every slot) and ``redis_sentinel`` (one sentinel watching one master) run the store's other topologies for
real; both require a password, so the URL's credentials are exercised too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Literal
from urllib.parse import quote

import pytest

from tests.support.ports import free_port as free_port

ENV_URL = "BFF_TEST_REDIS_URL"
ENV_CLUSTER_URL = "BFF_TEST_REDIS_CLUSTER_URL"
ENV_SENTINEL_URL = "BFF_TEST_REDIS_SENTINEL_URL"
#: Password of the cluster node and the sentinel's master (test-only, on loopback; URL-hostile on purpose).
PASSWORD = "test-pass:/@#"
MISSING = (
    "redis-server not found: install it with `apt-get install -y redis-server` (Debian/Ubuntu) or "
    "`brew install redis` (macOS), or set {env}"
)
#: Bound on a server's start: a binary that cannot start fails the test instead of hanging it.
START_TIMEOUT = 10.0

Topology = Literal["standalone", "cluster", "sentinel"]


def require_redis_server(env: str = ENV_URL) -> str:
    """The path of ``redis-server``; fails the calling test (not skips it) when it is missing."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(MISSING.format(env=env), pytrace=False)
    return binary


@contextlib.contextmanager
def session_redis_url(topology: Topology = "standalone") -> Iterator[str]:
    """Yield the URL of a Redis for the suite: the topology's environment variable when set (CI with Redis
    services), else private servers stopped at the end."""
    env = {"standalone": ENV_URL, "cluster": ENV_CLUSTER_URL, "sentinel": ENV_SENTINEL_URL}[topology]
    if url := os.environ.get(env):
        yield url
        return
    binary = require_redis_server(env)
    if topology == "cluster":
        with redis_cluster(binary) as url:
            yield url
    elif topology == "sentinel":
        with redis_sentinel(binary) as url:
            yield url
    else:
        with RedisProcess(binary) as server:
            yield server.url


def cluster_node_port() -> int:
    """A free port for a cluster node: its bus listens on port + 10000, so that must be free and <= 65535 too."""
    while True:
        port = free_port()
        with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            if port + 10000 <= 65535:
                s.bind(("127.0.0.1", port + 10000))
                return port


def answers_ping(port: int) -> bool:
    """True when a Redis on 127.0.0.1:``port`` answers PING (NOAUTH counts: the server is up)."""
    try:
        reply = command(port, "PING", timeout=0.25)
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH"))


def command(port: int, *args: str, password: str | None = None, timeout: float = 5.0) -> bytes:
    """Send one command (after AUTH when ``password`` is given) to 127.0.0.1:``port`` and return the raw reply:
    a status or error line, or a bulk string's payload. Enough RESP for setting up servers, not a client."""

    def encode(*parts: str) -> bytes:
        return f"*{len(parts)}\r\n".encode() + b"".join(f"${len(p.encode())}\r\n{p}\r\n".encode() for p in parts)

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s, s.makefile("rb") as reader:
        if password is not None:
            s.sendall(encode("AUTH", password))
            if (auth := reader.readline()) != b"+OK\r\n":
                raise RuntimeError(f"AUTH failed: {auth!r}")
        s.sendall(encode(*args))
        line = reader.readline()
        if line.startswith(b"$") and line != b"$-1\r\n":
            return reader.read(int(line[1:]) + 2)[:-2]
        return line.rstrip(b"\r\n")


@contextlib.contextmanager
def redis_cluster(binary: str) -> Iterator[str]:
    """A one-node Redis Cluster owning all 16384 slots; yields its ``redis+cluster://`` URL (with the password)."""
    args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--requirepass", PASSWORD]
    with RedisProcess(binary, cluster_node_port(), args=args) as node:
        command(node.port, "CLUSTER", "ADDSLOTSRANGE", "0", "16383", password=PASSWORD)
        deadline = time.monotonic() + START_TIMEOUT
        while b"cluster_state:ok" not in command(node.port, "CLUSTER", "INFO", password=PASSWORD):
            if time.monotonic() > deadline:
                raise RuntimeError("the one-node cluster did not reach cluster_state:ok")
            time.sleep(0.02)
        yield f"redis+cluster://:{quote(PASSWORD, safe='')}@127.0.0.1:{node.port}"


@contextlib.contextmanager
def redis_sentinel(binary: str, service_name: str = "bff") -> Iterator[str]:
    """A master and one sentinel watching it; yields the ``redis+sentinel://`` URL (password for the master)."""
    with RedisProcess(binary, args=["--requirepass", PASSWORD]) as master:
        # Sentinel needs a config file it may rewrite; the password lets it watch the master.
        config = f"sentinel monitor {service_name} 127.0.0.1 {master.port} 1\n"
        config += f'sentinel auth-pass {service_name} "{PASSWORD}"\n'
        with RedisProcess(binary, config=config, args=["--sentinel"]) as sentinel:
            yield f"redis+sentinel://:{quote(PASSWORD, safe='')}@127.0.0.1:{sentinel.port}/{service_name}"


class RedisProcess:
    """One ``redis-server`` on 127.0.0.1. ``start()`` and ``stop()`` may alternate; the port stays the same."""

    def __init__(self, binary: str, port: int | None = None, *, args: Sequence[str] = (), config: str = "") -> None:
        self.binary = binary
        self.port = port if port is not None else free_port()
        self.args = list(args)
        self.config = config  # the contents of a config file, for what has no command-line form (sentinel)
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None

    def start(self) -> None:
        """Start the server and return once it answers PING (or raise within ``START_TIMEOUT``)."""
        if self._process is not None:
            raise RuntimeError("redis-server is already running")
        self._dir = tempfile.TemporaryDirectory(prefix="bff-redis-")
        workdir = Path(self._dir.name)
        log_path = workdir / "redis.log"
        self._log = log_path.open("wb")
        config = []
        if self.config:
            (workdir / "redis.conf").write_text(self.config)
            config = [str(workdir / "redis.conf")]  # a config file must be the first argument
        # --save "" and --appendonly no: nothing is written, a restart starts empty.
        args = [
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ]
        self._process = subprocess.Popen(
            [self.binary, *config, *args, *self.args], stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not answers_ping(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                log = log_path.read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}")
            time.sleep(0.02)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open and every command hangs, like a stuck Redis or a
        network partition. Nothing is lost; ``resume()`` continues where it stopped."""
        assert self._process is not None, "redis-server is not running"
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None, "redis-server is not running"
        self._process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the server, as a crash or a lost machine would: no shutdown, no goodbye to clients or replicas."""
        assert self._process is not None, "redis-server is not running"
        self._process.kill()
        self._process.wait()
        self.stop()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s) and remove its directory. No-op when stopped."""
        process, self._process = self._process, None
        if process is not None:
            process.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> RedisProcess:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
