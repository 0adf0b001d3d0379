"""An upstream on loopback that wants a TLS client certificate (RFC 8705): its own thread and event loop, HTTP/1.1
keep-alive by hand, so a test sees which certificate each request arrived with and on which connection.

Every answer is JSON: ``client_cert`` (the ``x5t#S256`` of the connection's certificate), ``connection`` (a number
per TLS connection), ``bound`` (whether the bearer token's ``cnf.x5t#S256`` names that certificate, RFC 8705 3)
and ``token`` (the token's fingerprint).
With ``require_binding``, a token not bound to the connection's certificate is refused with 401 ``invalid_token``.
Nothing of the token is echoed (the leak guard watches answers).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.leak_guard import fingerprint
from tests.support.pki import Issued


def x5t_s256(der: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode("ascii")


def _claims(authorization: str) -> dict[str, Any]:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or token.count(".") != 2:
        return {}
    payload = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return {}
    return claims if isinstance(claims, dict) else {}


@dataclass
class MTLSUpstream:
    url: str
    #: The ``x5t#S256`` of the certificate of every request that arrived, in order (None: no certificate).
    seen: list[str | None] = field(default_factory=list)
    #: Handshakes that failed (no certificate, or one the CA did not sign).
    refused: int = 0


def _serve_connection(tls: ssl.SSLSocket, state: MTLSUpstream, number: int, binding: bool) -> None:
    der = tls.getpeercert(binary_form=True)
    thumb = x5t_s256(der) if der else None
    stream = tls.makefile("rb")
    while True:
        request_line = stream.readline(65536)
        if not request_line:
            with contextlib.suppress(OSError, ValueError):
                tls.unwrap()  # answer the client's close_notify with ours (RFC 8446 6.1)
            return
        headers: dict[str, str] = {}
        while (line := stream.readline(65536)) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        stream.read(int(headers.get("content-length", "0")))
        state.seen.append(thumb)
        cnf = _claims(headers.get("authorization", "")).get("cnf")
        bound = isinstance(cnf, dict) and thumb is not None and cnf.get("x5t#S256") == thumb
        status, extra = "200 OK", ""
        if binding and not bound:
            # RFC 8705 3: a token not bound to the presented certificate is an invalid token.
            status, extra = "401 Unauthorized", 'WWW-Authenticate: Bearer error="invalid_token"\r\n'
        token = headers.get("authorization", "").removeprefix("Bearer ")
        answer = {"client_cert": thumb, "connection": number, "bound": bound, "token": fingerprint(token)}
        body = json.dumps(answer).encode()
        head = f"HTTP/1.1 {status}\r\n{extra}Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        tls.sendall(head.encode() + body)


@contextlib.contextmanager
def running_mtls_upstream(
    server: Issued, client_ca: Path | list[Path] | None, *, require_binding: bool = False, optional: bool = False
) -> Iterator[MTLSUpstream]:
    """Serve on 127.0.0.1 with ``server``'s certificate; a client certificate is required and must be signed by
    ``client_ca`` (a list: any of these, e.g. self-signed ones); None: no client certificate is asked for.
    ``optional``: a certificate is asked for but a client without one is served too.

    Blocking sockets, a thread per connection: a refused handshake then sends its TLS alert before the socket
    closes, as nginx or Envoy do (an asyncio server just closes)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server.cert, server.key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_OPTIONAL if optional else ssl.CERT_REQUIRED
        for ca in client_ca if isinstance(client_ca, list) else [client_ca]:
            context.load_verify_locations(cafile=str(ca))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    state = MTLSUpstream(url=f"https://127.0.0.1:{listener.getsockname()[1]}")
    counter = itertools.count(1)
    open_sockets: list[socket.socket] = []

    def handle(raw: socket.socket, number: int) -> None:
        try:
            with context.wrap_socket(raw, server_side=True) as tls:
                open_sockets.append(tls)
                _serve_connection(tls, state, number, require_binding)
        except ssl.SSLError:
            state.refused += 1  # no certificate, or one of another CA: the alert went out
        except (OSError, ValueError):
            pass  # the client went away, or sent what this small server does not parse
        finally:
            raw.close()

    def accept() -> None:
        while True:
            try:
                raw, _ = listener.accept()
            except OSError:
                return  # the listener closed: the test is over
            open_sockets.append(raw)
            threading.Thread(target=handle, args=(raw, next(counter)), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        listener.close()
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        thread.join(10)
