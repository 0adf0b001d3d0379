"""The plaintext of a session record: compact, because every session costs Redis memory for as long as it lives.

Realistic tokens (an access and an ID token of several hundred bytes each) are most of a session's size, so the
record is kept small in two steps (the figures are in docs/performance.md):

1. A JWS (``header.payload.signature``, RFC 7515 7.1) is stored as ``[header, payload, signature]`` with the header
   and payload base64url-decoded to their JSON text, which compresses well (the access and ID tokens repeat the
   issuer, subject, audience and claim names); base64 text of JSON barely compresses. Only tokens whose segments
   are canonical unpadded base64url of UTF-8 are unpacked, so re-encoding gives back the token byte for byte;
   anything else (opaque tokens, odd encodings) is kept as it is.
2. The JSON is DEFLATE-compressed (raw stream, RFC 1951) behind a one-byte format marker.

Records written before this format are plain JSON (their first byte is ``{``) and are still read. The plaintext is
encrypted and authenticated before it reaches the store (``SessionManager``), so only bff ever inflates it.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from typing import Any

from bff.models import Session
from bff.types import JSONObject

#: First byte of the current format: the rest is raw DEFLATE of the JSON, JWSs unpacked.
_DEFLATED_V1 = b"\x01"
_TOKEN_FIELDS = ("access_token", "refresh_token", "id_token")
_ZLIB_LEVEL = 6
_RAW_DEFLATE = -15  # wbits: no zlib header or checksum (the record is authenticated by AES-GCM already)


def encode_session(session: Session) -> bytes:
    data = session.to_json()
    data["tokens"] = _pack_tokens(data["tokens"])
    if "route_tokens" in data:
        data["route_tokens"] = {k: _pack_tokens(v) for k, v in data["route_tokens"].items()}
    compressor = zlib.compressobj(_ZLIB_LEVEL, zlib.DEFLATED, _RAW_DEFLATE)
    plaintext = json.dumps(data, separators=(",", ":")).encode("utf-8")
    return _DEFLATED_V1 + compressor.compress(plaintext) + compressor.flush()


def decode_session(plaintext: bytes) -> Session:
    """Raises ``ValueError`` (``zlib.error`` and ``json.JSONDecodeError`` are ValueErrors), ``KeyError`` or
    ``TypeError`` for a record it cannot read."""
    if plaintext[:1] == _DEFLATED_V1:
        try:
            plaintext = zlib.decompress(plaintext[1:], _RAW_DEFLATE)
        except zlib.error as exc:
            raise ValueError("session record does not inflate") from exc
    # else: plain JSON, written before this format
    data = json.loads(plaintext)
    data["tokens"] = _unpack_tokens(data["tokens"])
    if "route_tokens" in data:
        data["route_tokens"] = {k: _unpack_tokens(v) for k, v in data["route_tokens"].items()}
    return Session.from_json(data)


def _pack_tokens(tokens: JSONObject) -> JSONObject:
    packed = dict(tokens)
    for name in _TOKEN_FIELDS:
        value = packed.get(name)
        if isinstance(value, str) and (parts := pack_jws(value)) is not None:
            packed[name] = parts
    return packed


def _unpack_tokens(tokens: Any) -> JSONObject:
    if not isinstance(tokens, dict):
        raise TypeError("tokens must be an object")
    unpacked = dict(tokens)
    for name in _TOKEN_FIELDS:
        value = unpacked.get(name)
        if isinstance(value, list):
            unpacked[name] = unpack_jws(value)
    return unpacked


def pack_jws(token: str) -> list[str] | None:
    """``[header JSON text, payload JSON text, signature]`` for a JWS compact serialisation whose header and payload
    re-encode to exactly the same characters; None for anything else."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    header, payload, signature = parts
    decoded = [_b64_text(header), _b64_text(payload)]
    if decoded[0] is None or decoded[1] is None:
        return None
    return [decoded[0], decoded[1], signature]


def unpack_jws(parts: list[Any]) -> str:
    if len(parts) != 3 or not all(isinstance(p, str) for p in parts):
        raise TypeError("a packed JWS is three strings")
    return f"{_b64(parts[0])}.{_b64(parts[1])}.{parts[2]}"


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("utf-8")).rstrip(b"=").decode("ascii")


def _b64_text(segment: str) -> str | None:
    """The UTF-8 text a base64url segment encodes, if encoding that text again gives exactly ``segment``."""
    try:
        text = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        return None
    return text if _b64(text) == segment else None
