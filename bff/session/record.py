"""The plaintext of a session record: compact, because every session costs Redis memory for as long as it lives.

Realistic tokens (an access and an ID token of several hundred bytes each) are most of a session's size, so the
record is kept small in two steps (the figures are in docs/performance.md):

1. A JWS (``header.payload.signature``, RFC 7515 7.1) is stored as ``[header, payload, signature]`` with the header
   and payload base64url-decoded to their JSON text, which compresses well (the access and ID tokens repeat the
   issuer, subject, audience and claim names); base64 text of JSON barely compresses. Only tokens whose segments
   are canonical unpadded base64url of UTF-8 are unpacked, so re-encoding gives back the token byte for byte;
   anything else (opaque tokens, odd encodings) is kept as it is.
2. The JSON is DEFLATE-compressed (raw stream, RFC 1951) behind a one-byte format number.

The first byte names the format, so a release reads every format it knows and writes the one configured
(``[session] write_format``): a rolling update runs old and new releases on one store (docs/storage-formats.md).

* ``{``: plain JSON ("format 0", written by the release before compaction; read, never written).
* ``0x01``, format 1: raw DEFLATE of the JSON.
* ``0x02``, format 2: raw DEFLATE of the same JSON with the preset dictionary ``FORMAT_2_DICTIONARY``: the field
  names of the record and of the common JWT claims are then back-references from the first occurrence on.
* Anything else: a format this release does not know (``UnsupportedFormat``), written by a newer one; the
  plaintext decrypted and authenticated, so only a bff holding the key ring wrote it.

The same framing carries the refresh-result cache (``encode_tokens``). The plaintext is encrypted and authenticated
before it reaches the store (``SessionManager``), so only bff ever inflates it.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from typing import Any

from bff.config.values import WRITE_FORMATS
from bff.models import Session, TokenSet
from bff.types import JSONObject

#: First byte of format 1: the rest is raw DEFLATE of the JSON, JWSs unpacked.
_DEFLATED_V1 = b"\x01"
#: First byte of format 2: raw DEFLATE with ``FORMAT_2_DICTIONARY`` as the preset dictionary (RFC 1950 FDICT).
_DEFLATED_V2 = b"\x02"
_PLAIN_JSON = b"{"
#: Part of format 2 for ever: a different dictionary is a different format. Field names of the record, registered
#: JWT claims (RFC 7519 4.1), OpenID Connect standard claims (OIDC Core 5.1) and JWS header parameters (RFC 7515 4.1)
#: as they appear in the record's JSON (inner JSON escaped); DEFLATE refers back at most 32 KiB, so all of it counts,
#: and the most frequent strings come last (the nearest back-references are the cheapest).
FORMAT_2_DICTIONARY = (
    b'"preferred_username\\":\\"given_name\\":\\"family_name\\":\\"locale\\":\\"acr\\":\\"amr\\":[\\"azp\\":\\"'
    b'nbf\\":\\"session_state\\":\\"realm_access\\":{\\"roles\\":[\\"resource_access\\":{\\"groups\\":[\\"'
    b'email_verified\\":true,\\"at_hash\\":\\"c_hash\\":\\"auth_time\\":\\"nonce\\":\\"'
    b'"refresh_expires_at":"scope":"openid profile email offline_access","route_tokens":{"'
    b'\\",\\"jti\\":\\"\\",\\"client_id\\":\\"\\",\\"scope\\":\\"openid profile email offline_access\\"}","'
    b'{\\"alg\\":\\"RS256\\",\\"typ\\":\\"JWT\\",\\"kid\\":\\"'
    b'"},"created_at":"expires_at":"last_seen":"claims":{"sub":"name":"email":"},"version":1,"sid":"'
    b'\\",\\"name\\":\\"\\",\\"email\\":\\"\\",\\"sid\\":\\"'
    b'"],"token_type":"Bearer","expires_at":"refresh_token":"id_token":["{\\"alg\\":\\"RS256\\",\\"typ\\":\\"JWT\\",\\"kid\\":\\"'
    b'"}","{\\"iss\\":\\"https://\\",\\"sub\\":\\"\\",\\"aud\\":\\"\\",\\"exp\\":\\"iat\\":'
    b'{"sub":"tokens":{"access_token":["{\\"alg\\":\\"RS256\\",\\"typ\\":\\"at+jwt\\",\\"kid\\":\\"'
)
_TOKEN_FIELDS = ("access_token", "refresh_token", "id_token")
_ZLIB_LEVEL = 6
_RAW_DEFLATE = -15  # wbits: no zlib header or checksum (the record is authenticated by AES-GCM already)


class UnsupportedFormat(ValueError):
    """A record in a format this release does not read: written by a newer release (or one configured to write a
    format the older ones cannot read)."""

    def __init__(self, number: int) -> None:
        super().__init__(f"stored format {number} is not one this release reads (0, 1, 2)")
        self.number = number


def stored_format(plaintext: bytes) -> int:
    """The format number of a record's (or refresh result's) plaintext: its first byte; 0 for plain JSON (which is a
    session record's format 0 but a refresh result's format 1: results were never compressed before format 2)."""
    if not plaintext:
        raise ValueError("session record is empty")
    return 0 if plaintext[:1] == _PLAIN_JSON else plaintext[0]


def encode_session(session: Session, write_format: int = 1) -> bytes:
    data = session.to_json()
    data["tokens"] = _pack_tokens(data["tokens"])
    if "route_tokens" in data:
        data["route_tokens"] = {k: _pack_tokens(v) for k, v in data["route_tokens"].items()}
    return _deflate(json.dumps(data, separators=(",", ":")).encode("utf-8"), write_format)


def decode_session(plaintext: bytes) -> Session:
    """Raises ``UnsupportedFormat`` for a format it does not know; ``ValueError`` (``zlib.error`` and
    ``json.JSONDecodeError`` are ValueErrors, and so is ``UnsupportedFormat``), ``KeyError`` or ``TypeError`` for a
    record it cannot read."""
    return decode_session_sized(plaintext)[0]


def decode_session_sized(plaintext: bytes) -> tuple[Session, int]:
    """``decode_session``, and the length of the record's JSON text (what a memo of sessions weighs them by)."""
    text = _inflate(plaintext)
    # Records are UTF-8 JSON (RFC 8259 8.1): decoded directly, not sniffed for UTF-16/32 as json.loads(bytes) does.
    return _session_from_json(json.loads(text.decode("utf-8"))), len(text)


def _session_from_json(data: Any) -> Session:
    data["tokens"] = _unpack_tokens(data["tokens"])
    if "route_tokens" in data:
        data["route_tokens"] = {k: _unpack_tokens(v) for k, v in data["route_tokens"].items()}
    return Session.from_json(data)


def encode_tokens(tokens: TokenSet, write_format: int = 1) -> bytes:
    """A refresh result: format 1 is the plain JSON of the token set (as the release before formats wrote it),
    format 2 the session record's framing."""
    if write_format == 1:
        return json.dumps(tokens.to_json(), separators=(",", ":")).encode("utf-8")
    return _deflate(json.dumps(_pack_tokens(tokens.to_json()), separators=(",", ":")).encode("utf-8"), write_format)


def decode_tokens(plaintext: bytes) -> TokenSet:
    """Raises as ``decode_session`` does."""
    return TokenSet.from_json(_unpack_tokens(json.loads(_inflate(plaintext))))


def _deflate(plaintext: bytes, write_format: int) -> bytes:
    if write_format == 1:
        compressor = zlib.compressobj(_ZLIB_LEVEL, zlib.DEFLATED, _RAW_DEFLATE)
        return _DEFLATED_V1 + compressor.compress(plaintext) + compressor.flush()
    if write_format == 2:
        compressor = zlib.compressobj(_ZLIB_LEVEL, zlib.DEFLATED, _RAW_DEFLATE, zdict=FORMAT_2_DICTIONARY)
        return _DEFLATED_V2 + compressor.compress(plaintext) + compressor.flush()
    raise ValueError(f"this release writes formats {WRITE_FORMATS}, not {write_format}")


def _inflate(plaintext: bytes) -> bytes:
    """The JSON text inside any format this release reads."""
    marker = plaintext[:1]
    try:
        if marker == _DEFLATED_V1:
            return zlib.decompress(plaintext[1:], _RAW_DEFLATE)
        if marker == _DEFLATED_V2:
            inflater = zlib.decompressobj(_RAW_DEFLATE, zdict=FORMAT_2_DICTIONARY)
            text = inflater.decompress(plaintext[1:])
            if not inflater.eof or inflater.unused_data:
                raise ValueError("session record is truncated or has trailing bytes")
            return text
    except zlib.error as exc:
        raise ValueError("session record does not inflate") from exc
    if marker == _PLAIN_JSON:
        return plaintext  # format 0: plain JSON, written before compaction
    if not marker:
        raise ValueError("session record is empty")
    raise UnsupportedFormat(marker[0])


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
    if len(parts) != 3:
        raise TypeError("a packed JWS is three strings")
    header, payload, signature = parts
    if not (isinstance(header, str) and isinstance(payload, str) and isinstance(signature, str)):
        raise TypeError("a packed JWS is three strings")
    return f"{_b64(header)}.{_b64(payload)}.{signature}"


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64(text: str) -> str:
    """Unpadded base64url (RFC 4648 5) of ``text``'s UTF-8: ``base64.urlsafe_b64encode`` without its call layers."""
    return binascii.b2a_base64(text.encode("utf-8"), newline=False).rstrip(b"=").translate(_URLSAFE).decode("ascii")


def _b64_text(segment: str) -> str | None:
    """The UTF-8 text a base64url segment encodes, if encoding that text again gives exactly ``segment``."""
    try:
        text = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        return None
    return text if _b64(text) == segment else None
