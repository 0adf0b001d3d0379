"""Keys and encryption at rest.

The configured key ring (``[session] keys``, oldest first, newest last) is never used directly: each purpose derives
its own key from every ring entry with HKDF-SHA256 (a separate ``info`` per purpose, STYLE 8), so the cookie signer,
the login state and token encryption never share key material.

Encrypted blobs are ``b"\\x01" || key_id (4 bytes) || nonce (12 bytes) || AES-256-GCM ciphertext+tag``. The newest key
encrypts; any key of the ring decrypts (the key id picks it), so appending a key rotates without losing sessions.
The caller passes associated data (the store key), binding a blob to the place it was stored: a blob copied under
another key does not decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = b"\x01"
_NONCE = 12
_KEY_ID = 4


class DecryptionError(Exception):
    """A blob did not decrypt with any key of the ring (tampered, truncated, or encrypted with a removed key)."""


def derive_keys(secrets_: Sequence[str], purpose: str, length: int = 32) -> list[bytes]:
    """One derived key per ring entry, in ring order (oldest first, newest last)."""
    return [
        HKDF(algorithm=hashes.SHA256(), length=length, salt=b"bff key ring", info=purpose.encode()).derive(
            s.encode("utf-8")
        )
        for s in secrets_
    ]


def random_id(nbytes: int = 32) -> str:
    """A URL-safe random identifier; 32 bytes = 256 bits from ``secrets``."""
    return secrets.token_urlsafe(nbytes)


def digest(value: str) -> str:
    """URL-safe SHA-256 of a string: how identifiers become store keys (the id itself is never stored)."""
    return base64.urlsafe_b64encode(hashlib.sha256(value.encode("utf-8")).digest()).rstrip(b"=").decode("ascii")


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


class Encryptor:
    """AES-256-GCM with a rotating key ring."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("the key ring is empty")
        self._by_id = {hashlib.sha256(k).digest()[:_KEY_ID]: AESGCM(k) for k in keys}
        self._current_id = hashlib.sha256(keys[-1]).digest()[:_KEY_ID]
        self._current = self._by_id[self._current_id]

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return _VERSION + self._current_id + nonce + self._current.encrypt(nonce, plaintext, associated_data)

    def decrypt(self, blob: bytes, associated_data: bytes) -> bytes:
        header = 1 + _KEY_ID + _NONCE
        if len(blob) < header + 16 or blob[:1] != _VERSION:
            raise DecryptionError("not an encrypted blob of a known version")
        aead = self._by_id.get(blob[1 : 1 + _KEY_ID])
        if aead is None:
            raise DecryptionError("encrypted with a key that is no longer in the ring")
        try:
            return aead.decrypt(blob[1 + _KEY_ID : header], blob[header:], associated_data)
        except InvalidTag as exc:
            raise DecryptionError("authentication tag mismatch") from exc
