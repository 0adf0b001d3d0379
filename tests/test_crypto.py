from __future__ import annotations

import pytest

from bff.crypto import DecryptionError, Encryptor, constant_time_equal, derive_keys, digest, random_id

RING = ["a" * 40, "b" * 40]


def test_random_ids_have_256_bits() -> None:
    ids = {random_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) >= 43 for i in ids)  # 32 bytes, base64url


def test_each_purpose_derives_its_own_keys() -> None:
    assert derive_keys(RING, "one") != derive_keys(RING, "two")
    assert derive_keys(RING, "one") == derive_keys(RING, "one")
    assert all(len(k) == 32 for k in derive_keys(RING, "one"))


def test_round_trip_binds_associated_data() -> None:
    enc = Encryptor(derive_keys(RING, "x"))
    blob = enc.encrypt(b"refresh-token-value", b"key-1")
    assert b"refresh-token-value" not in blob
    assert enc.decrypt(blob, b"key-1") == b"refresh-token-value"
    with pytest.raises(DecryptionError, match="tag mismatch"):
        enc.decrypt(blob, b"key-2")  # moved under another store key


def test_tampering_is_detected() -> None:
    enc = Encryptor(derive_keys(RING, "x"))
    blob = bytearray(enc.encrypt(b"secret", b"k"))
    blob[-1] ^= 1
    with pytest.raises(DecryptionError):
        enc.decrypt(bytes(blob), b"k")
    with pytest.raises(DecryptionError, match="known version"):
        enc.decrypt(b"\x02" + bytes(blob[1:]), b"k")
    with pytest.raises(DecryptionError, match="known version"):
        enc.decrypt(b"\x01abc", b"k")


def test_rotation_keeps_old_blobs_readable_and_encrypts_with_the_newest() -> None:
    old = Encryptor(derive_keys(RING[:1], "x"))
    blob = old.encrypt(b"v", b"k")
    rotated = Encryptor(derive_keys(RING, "x"))
    assert rotated.decrypt(blob, b"k") == b"v"
    new_blob = rotated.encrypt(b"w", b"k")
    with pytest.raises(DecryptionError, match="no longer in the ring"):
        old.decrypt(new_blob, b"k")
    retired = Encryptor(derive_keys(RING[1:], "x"))
    with pytest.raises(DecryptionError, match="no longer in the ring"):
        retired.decrypt(blob, b"k")


def test_empty_ring_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        Encryptor([])


def test_digest_and_compare() -> None:
    assert digest("abc") == digest("abc") != digest("abd")
    assert "abc" not in digest("abc")
    assert constant_time_equal("x", "x")
    assert not constant_time_equal("x", "y")
