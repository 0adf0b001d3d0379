"""Apache httpd + mod_auth_openidc (Debian's ``apache2`` and ``libapache2-mod-auth-openidc``) as a BFF.

httpd runs from a configuration written into the run's directory (not the system service): the event MPM, one
child process, on the server core. mod_auth_openidc logs in through the reference IdP (authorization code + PKCE
S256), keeps its sessions server-side in the benchmark's Redis (``OIDCCacheType redis``), passes no claims in
headers and the access token only in the environment, from which ``RequestHeader`` makes the upstream request's
bearer; its own session cookie is stripped before the upstream.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from tests.bench.idp import IdP
from tests.bench.peers import Peer, Skipped
from tests.bench.servers import API_PATH, log_in_through_idp
from tests.bench.system import CpuPlan, Process, pinned, wait_for_port

NAME = "Apache httpd + mod_auth_openidc"
PACKAGES = "apache2 libapache2-mod-auth-openidc"
MODULES = Path("/usr/lib/apache2/modules")
COOKIE_NAME = "mod_auth_openidc_session"
CALLBACK = "/oidc/callback"
#: The Redis database of its sessions: apart from bff's.
REDIS_DB = 3
#: Threads of the one child: enough for the benchmark's 32 connections and the correctness checks beside them.
THREADS = 64

_CONFIG = """
ServerRoot "{dir}"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile "{dir}/httpd.pid"
ErrorLog /dev/stderr
LogLevel warn
{modules}
{user}
StartServers 1
ServerLimit 1
ThreadLimit {threads}
ThreadsPerChild {threads}
MaxRequestWorkers {threads}
MinSpareThreads 1
MaxSpareThreads {threads}
MaxConnectionsPerChild 0
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 75

OIDCProviderMetadataURL {idp}/.well-known/openid-configuration
OIDCClientID {client_id}
OIDCClientSecret {client_secret}
OIDCRedirectURI {origin}{callback}
OIDCCryptoPassphrase {passphrase}
OIDCScope "openid profile"
OIDCPKCEMethod S256
OIDCSessionType server-cache
OIDCCacheType redis
OIDCRedisCacheServer {redis}
OIDCRedisCacheDatabase {db}
OIDCPassClaimsAs environment
OIDCPassIDTokenAs payload
OIDCPassUserInfoAs json
OIDCStripCookies {cookie}

<Location />
    AuthType openid-connect
    Require valid-user
</Location>
ProxyPass /api/ {upstream}/
RequestHeader set Authorization "Bearer %{{OIDC_access_token}}e"
"""
_MODULES = (
    ("mpm_event_module", "mod_mpm_event.so"),
    ("authn_core_module", "mod_authn_core.so"),
    ("authz_core_module", "mod_authz_core.so"),
    ("authz_user_module", "mod_authz_user.so"),
    ("headers_module", "mod_headers.so"),
    ("proxy_module", "mod_proxy.so"),
    ("proxy_http_module", "mod_proxy_http.so"),
    ("auth_openidc_module", "mod_auth_openidc.so"),
)


def redirect_uri(port: int) -> str:
    return f"http://127.0.0.1:{port}{CALLBACK}"


def binary() -> str:
    """The httpd binary, or :class:`Skipped` saying what to install."""
    found = shutil.which("apache2") or shutil.which("apache2", path="/usr/sbin")
    missing = [so for _, so in _MODULES if not (MODULES / so).is_file()]
    if found is None or missing:
        what = "apache2" if found is None else ", ".join(missing)
        raise Skipped(f"{what} not found; install with: apt-get install -y {PACKAGES}")
    return found


async def start(
    idp: IdP, redis_url: str, upstream: str, port: int, workdir: Path, cores: Sequence[int], plan: CpuPlan
) -> Peer:
    """httpd logged in through ``idp``: wrk's headers carry its session cookie."""
    httpd = binary()
    directory = workdir / "apache"
    directory.mkdir(parents=True, exist_ok=True)
    origin = f"http://127.0.0.1:{port}"
    redis = urlsplit(redis_url)
    conf = directory / "httpd.conf"
    conf.write_text(
        _CONFIG.format(
            dir=directory,
            port=port,
            modules="\n".join(f"LoadModule {name} {MODULES / so}" for name, so in _MODULES),
            threads=THREADS,
            idp=idp.url,
            client_id=idp.client_id,
            client_secret=idp.client_secret,
            origin=origin,
            callback=CALLBACK,
            passphrase=secrets.token_urlsafe(32),
            redis=f"{redis.hostname}:{redis.port}",
            db=REDIS_DB,
            cookie=COOKIE_NAME,
            upstream=upstream,
            # As root, httpd's child switches to an account (``User``): the unprivileged one of the system.
            user="User nobody\nGroup nogroup" if os.geteuid() == 0 else "",
        )
    )
    command = [httpd, "-d", str(directory), "-f", str(conf), "-DFOREGROUND"]
    process = Process("apache", pinned(command, cores, plan), directory / "stdout.log")
    try:
        wait_for_port(port, process)
        cookie = await log_in_through_idp(NAME, origin + API_PATH, origin, COOKIE_NAME)
    except Exception:
        process.stop()
        raise
    return Peer(NAME, origin, process, {"Cookie": f"{COOKIE_NAME}={cookie}", "X-CSRF": "1"})
