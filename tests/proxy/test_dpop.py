"""The proxy on DPoP routes (RFC 9449 7, 9) against a raw-socket upstream that answers with hostile ``DPoP-Nonce``
values: a nonce is used (one retry, its proof carries exactly that nonce) only if it is one by RFC 9449 8.1's
grammar; anything else is never sent anywhere and the 401 passes through. Every request head bff writes keeps its
lines intact, and a route without DPoP sends ``Bearer`` and no proof."""

from __future__ import annotations

import base64
import json
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc.jwk import ECKey

from bff.config import RouteSettings
from bff.oidc.dpop import DPoPProver, access_token_hash, valid_nonce
from bff.types import system_clock
from tests.proxy.conftest import TOKEN, StubBearer, run_proxy

NQCHAR = bytes([0x21, *range(0x23, 0x5C), *range(0x5D, 0x7F)])


@dataclass
class Script:
    """What the upstream answers the first request of each round with; later requests get 200."""

    nonce: bytes = b"n"
    #: Challenge every request, not only the first.
    always: bool = False
    heads: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def upstream_server(script: Script) -> socketserver.ThreadingTCPServer:
    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                line = self.rfile.readline(65536)
                if not line:
                    return
                head += line
            with script.lock:
                script.heads.append(head)
                first = len(script.heads) == 1 or script.always
            if first:
                answer = (
                    b'HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: DPoP error="use_dpop_nonce"\r\n'
                    b"DPoP-Nonce: " + script.nonce + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
            else:
                answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            self.wfile.write(answer)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def proof_of(head: bytes) -> tuple[dict[str, object], dict[str, object], str]:
    lines = head.split(b"\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:] if line)}
    parts = fields[b"dpop"].decode("ascii").split(".")
    header, claims = (json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))) for p in parts[:2])
    return header, claims, fields[b"authorization"].decode("ascii")


@dataclass
class World:
    url: str
    upstream: str
    script: Script


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    script = Script()
    server = upstream_server(script)
    upstream = f"http://127.0.0.1:{server.server_address[1]}"
    prover = DPoPProver(ECKey.generate_key("P-256", private=True), clock=system_clock)
    routes = [
        RouteSettings(path="/api/dpop", upstream=upstream + "/r", dpop=True),
        RouteSettings(path="/api/plain", upstream=upstream + "/p", dpop=False),
    ]
    try:
        with run_proxy(routes, StubBearer(), dpop=prover) as url:
            yield World(url, upstream, script)
    finally:
        server.shutdown()
        server.server_close()


def call(world: World, path: str, nonce: bytes, *, always: bool = False) -> httpx.Response:
    with world.script.lock:
        world.script.heads.clear()
        world.script.nonce = nonce
        world.script.always = always
    return httpx.get(world.url + path + "?q=1", headers={"X-CSRF": "1"}, timeout=10)


def test_the_proof_binds_method_url_and_token(world: World) -> None:
    response = call(world, "/api/dpop/x", b"abc")
    assert response.status_code == 200
    assert len(world.script.heads) == 2
    header, claims, authorization = proof_of(world.script.heads[1])
    assert authorization == "DPoP " + TOKEN
    assert header["typ"] == "dpop+jwt"
    assert header["alg"] == "ES256"
    assert "d" not in header["jwk"]  # type: ignore[operator]
    assert claims["htm"] == "GET"
    assert claims["htu"] == world.upstream + "/r/x"  # no query (RFC 9449 4.2)
    assert claims["ath"] == access_token_hash(TOKEN)
    assert claims["nonce"] == "abc"
    _, first, _ = proof_of(world.script.heads[0])
    assert first["jti"] != claims["jti"]


def test_a_second_challenge_passes_through(world: World) -> None:
    response = call(world, "/api/dpop/x", b"again", always=True)
    assert response.status_code == 401
    assert len(world.script.heads) == 2  # one retry, never a loop


def test_a_route_without_dpop_sends_bearer_and_no_proof(world: World) -> None:
    response = call(world, "/api/plain/x", b"abc")
    assert response.status_code == 401  # no nonce retry on a bearer route: the answer passes through
    assert len(world.script.heads) == 1
    head = world.script.heads[0].lower()
    assert b"\r\ndpop:" not in head
    assert b"\r\nauthorization: bearer " in head


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    nonce=st.one_of(
        st.binary(min_size=1, max_size=300).filter(lambda b: b"\r" not in b and b"\n" not in b),
        st.text(alphabet=st.sampled_from([chr(c) for c in NQCHAR]), min_size=1, max_size=300).map(str.encode),
    )
)
def test_hostile_nonces_are_used_only_when_valid(world: World, nonce: bytes) -> None:
    response = call(world, "/api/dpop/x", nonce)
    for head in world.script.heads:
        for line in head.split(b"\r\n"):
            assert b"\r" not in line
            assert b"\n" not in line
            assert b"\x00" not in line
        _, claims, _ = proof_of(head)  # whatever bff sent as a nonce was a valid one
        assert "nonce" not in claims or valid_nonce(str(claims["nonce"])) == claims["nonce"]
    expected = valid_nonce(nonce.strip(b" \t"))  # optional whitespace around a field value (RFC 9110 5.5)
    if expected is None:
        assert len(world.script.heads) == 1, "an invalid nonce never earns a retry"
        assert response.status_code in (401, 502)
    else:
        assert response.status_code == 200
        assert len(world.script.heads) == 2, "exactly one retry"
        _, claims, _ = proof_of(world.script.heads[1])
        assert claims["nonce"] == expected


@given(value=st.one_of(st.binary(max_size=400), st.text(max_size=400)))
def test_valid_nonce_keeps_only_the_rfc_grammar(value: bytes | str) -> None:
    kept = valid_nonce(value)
    if kept is not None:
        assert 1 <= len(kept) <= 256
        assert all(0x21 <= ord(c) <= 0x7E and c not in '"\\' for c in kept)


def test_a_nonce_with_a_control_character_earns_no_retry(world: World) -> None:
    response = call(world, "/api/dpop/x", b"\x0b!")  # vertical tab: whitespace to Python, not to HTTP
    assert response.status_code in (401, 502)
    assert len(world.script.heads) == 1
