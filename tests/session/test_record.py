"""The compact session record (``bff.session.record``): exact round trips, and what it saves."""

from __future__ import annotations

import base64
import json
import time

import pytest

from bff.models import Session, TokenSet
from bff.session.record import decode_session, encode_session, pack_jws, unpack_jws
from tests.support.realistic_tokens import realistic_tokens

SUB = "0b0e9c55-2a7e-4c1e-8d37-5a4bd0a1f001"


def session_with(tokens: TokenSet, **route_tokens: TokenSet) -> Session:
    now = 1_700_000_000.0
    return Session(
        sub=SUB,
        tokens=tokens,
        created_at=now,
        expires_at=now + 43200,
        last_seen=now,
        sid="idp-sid",
        claims={"sub": SUB, "name": "Alice Example"},
        route_tokens=dict(route_tokens),
    )


def test_realistic_tokens_round_trip_and_shrink() -> None:
    tokens = realistic_tokens(SUB, "idp-sid", int(time.time()))
    jwt_like = TokenSet(access_token=tokens.access_token, refresh_token=tokens.id_token)  # a JWT refresh token too
    session = session_with(tokens, **{"https://api.example.com|": jwt_like})
    encoded = encode_session(session)
    assert decode_session(encoded) == session
    as_json = json.dumps(session.to_json(), separators=(",", ":")).encode()
    assert len(encoded) < 0.6 * len(as_json)  # the point of the format (Redis memory per session)


@pytest.mark.parametrize(
    "token",
    [
        "opaque-access-token",
        "a.b",  # two segments
        "a.b.c.d.e",  # a JWE: five segments
        "eyJhbGciOiJub25lIn0=.e30.",  # padded: not canonical
        "eyJhbGciOiJub25lIn1.e30.sig",  # last character's spare bits set: decodes, but does not re-encode
        "_w.e30.sig",  # decodes to bytes that are not UTF-8
        "é.e30.sig",  # not base64url at all
        "",
    ],
)
def test_tokens_that_are_not_canonical_jws_are_kept_as_they_are(token: str) -> None:
    assert pack_jws(token) is None
    session = session_with(TokenSet(access_token=token or "x", id_token=token or None))
    assert decode_session(encode_session(session)) == session


def test_a_jws_is_unpacked_to_its_json_text() -> None:
    header, payload = '{"alg":"RS256","kid":"k1"}', '{"sub":"alice","n":"\\u00e9"}'
    segments = [base64.urlsafe_b64encode(p.encode()).rstrip(b"=").decode() for p in (header, payload)]
    token = ".".join([*segments, "c2lnbmF0dXJl"])
    assert pack_jws(token) == [header, payload, "c2lnbmF0dXJl"]
    assert unpack_jws([header, payload, "c2lnbmF0dXJl"]) == token


def test_records_written_as_plain_json_are_read() -> None:
    session = session_with(TokenSet(access_token="AT", refresh_token="RT"))
    assert decode_session(json.dumps(session.to_json()).encode()) == session


@pytest.mark.parametrize(
    ("plaintext", "error"),
    [
        (b"\x01not deflate", ValueError),
        (b"not json", ValueError),
        (b'{"sub": "a"}', KeyError),
        (b'{"sub": "a", "tokens": ["x"]}', TypeError),
        (json.dumps({"tokens": {"access_token": ["a", "b"]}}).encode(), TypeError),
    ],
)
def test_unreadable_records_raise_what_the_manager_catches(plaintext: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_session(plaintext)
