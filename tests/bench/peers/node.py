"""The Node BFF (``tests/bench/node_bff/``: express, express-session in Redis through connect-redis,
openid-client, http-proxy-middleware, versions pinned by its package-lock.json): one ``node`` process on the server
core.

Its packages come from the npm registry by ``npm ci`` into ``.bench/node-bff/`` (gitignored), with npm's cache in
``.bench/npm-cache/``: the first run downloads them, a later one installs from the cache, and a run whose lock file
is the one already installed skips ``npm ci``.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.bench.idp import IdP
from tests.bench.peers import Peer, Skipped
from tests.bench.servers import log_in_through_idp
from tests.bench.system import CpuPlan, Process, pinned, wait_for_port

NAME = "Node BFF (express + express-session/connect-redis + openid-client + http-proxy-middleware)"
SOURCE = Path(__file__).resolve().parents[1] / "node_bff"
FILES = ("package.json", "package-lock.json", "server.mjs")
COOKIE_NAME = "nodebff.sid"
#: The Redis database of its sessions: apart from bff's and Apache's.
REDIS_DB = 4
NPM_TIMEOUT = 300


def redirect_uri(port: int) -> str:
    return f"http://127.0.0.1:{port}/callback"


def install(cache: Path) -> Path:
    """The directory the Node BFF runs from, its packages installed (``npm ci``); :class:`Skipped` without node or
    npm, or when ``npm ci`` fails."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise Skipped("node/npm not found; install with: apt-get install -y nodejs npm")
    target = cache / "node-bff"
    target.mkdir(parents=True, exist_ok=True)
    installed = target / "node_modules" / ".package-lock.json"
    current = installed.is_file() and filecmp.cmp(SOURCE / "package-lock.json", target / "package-lock.json", False)
    for name in FILES:
        shutil.copyfile(SOURCE / name, target / name)
    if not current:
        command = [npm, "ci", "--omit=dev", "--no-audit", "--no-fund", "--ignore-scripts", "--prefer-offline"]
        command += ["--cache", str(cache / "npm-cache")]
        try:
            done = subprocess.run(command, cwd=target, capture_output=True, text=True, timeout=NPM_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise Skipped(f"npm ci did not finish within {NPM_TIMEOUT} s") from None
        if done.returncode != 0:
            raise Skipped(f"npm ci failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-300:]}")
    return target


async def start(
    idp: IdP,
    redis_url: str,
    upstream: str,
    port: int,
    workdir: Path,
    cores: Sequence[int],
    plan: CpuPlan,
    directory: Path,
) -> Peer:
    """``node server.mjs`` from ``directory`` (:func:`install`), logged in through ``idp``."""
    env = {
        **os.environ,
        "NODE_ENV": "production",
        "PORT": str(port),
        "ISSUER": idp.url,
        "CLIENT_ID": idp.client_id,
        "CLIENT_SECRET": idp.client_secret,
        "REDIS_URL": f"{redis_url.rsplit('/', 1)[0]}/{REDIS_DB}",
        "UPSTREAM": upstream,
        "SESSION_SECRET": os.urandom(24).hex(),
    }
    command = pinned([shutil.which("node") or "node", "server.mjs"], cores, plan)
    process = Process("node-bff", command, workdir / "node-bff.log", env=env, cwd=str(directory))
    origin = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, process, timeout=30)
        cookie = await log_in_through_idp(NAME, f"{origin}/login", origin, COOKIE_NAME)
    except Exception:
        process.stop()
        raise
    return Peer(NAME, origin, process, {"Cookie": f"{COOKIE_NAME}={cookie}", "X-CSRF": "1"})
