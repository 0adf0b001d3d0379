"""nginx twice: the upstream (a fixed ~300-byte JSON answer; ``AUTHORIZATION_PATH`` echoes the Authorization
header) and the reverse-proxy baseline in front of it.

Both run one worker process, without access logs, each from a configuration written into the run's directory
(``-p`` prefix, ``-e`` error log), so nothing outside it is read or written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from tests.bench.system import CpuPlan, Process, pinned, wait_for_port

#: The upstream's answer: a small JSON API response of about 300 bytes.
UPSTREAM_BODY = json.dumps(
    {
        "id": 7,
        "status": "shipped",
        "customer": {"id": "c-1024", "name": "Alice Example", "email": "alice@example.com"},
        "items": [
            {"sku": "BK-0001", "title": "The Pragmatic Programmer", "qty": 1, "price": "39.95"},
            {"sku": "BK-0002", "title": "Designing Data-Intensive Applications", "qty": 2, "price": "44.50"},
        ],
        "total": "128.95",
        "currency": "EUR",
    },
    separators=(",", ":"),
)

#: A path (under any route prefix) whose answer is the Authorization header the upstream received.
AUTHORIZATION_PATH = "/_bench/authorization"

_COMMON = """
daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
{body}
}}
"""

_UPSTREAM = """
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        # What the benchmark's correctness checks read: the Authorization header this request arrived with.
        location ~ /_bench/authorization$ {{
            default_type text/plain;
            return 200 '$http_authorization';
        }}
        location / {{
            default_type application/json;
            return 200 '{payload}';
        }}
    }}
"""

_PROXY = """
    upstream api {{
        server 127.0.0.1:{upstream_port};
        keepalive 128;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location /api/ {{
            proxy_pass http://api/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
"""


def start_nginx(
    name: str, binary: str, workdir: Path, body: str, port: int, cores: Sequence[int], plan: CpuPlan
) -> Process:
    directory = workdir / name
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "nginx.conf"
    conf.write_text(_COMMON.format(dir=directory, body=body))
    command = [binary, "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(conf)]
    process = Process(name, pinned(command, cores, plan), directory / "stdout.log")
    wait_for_port(port, process)
    return process


def start_upstream(binary: str, workdir: Path, port: int, cores: Sequence[int], plan: CpuPlan) -> Process:
    payload = UPSTREAM_BODY.replace("'", "\\'")
    return start_nginx(
        "nginx-upstream", binary, workdir, _UPSTREAM.format(port=port, payload=payload), port, cores, plan
    )


def start_proxy(
    binary: str, workdir: Path, port: int, upstream_port: int, cores: Sequence[int], plan: CpuPlan
) -> Process:
    body = _PROXY.format(port=port, upstream_port=upstream_port)
    return start_nginx("nginx-proxy", binary, workdir, body, port, cores, plan)
