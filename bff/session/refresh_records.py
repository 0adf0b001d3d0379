"""Refresh results as the store holds them: what a spent refresh token was exchanged for, sealed for the key
``SessionManager`` chose (``r:{digest(spent refresh token)}``), in the record's store formats
(docs/storage-formats.md)."""

from __future__ import annotations

import logging

from bff.crypto import DecryptionError, Encryptor
from bff.errors import SessionFormatUnsupported
from bff.models import TokenSet
from bff.session.record import UnsupportedFormat, decode_tokens, encode_tokens

logger = logging.getLogger("bff.session")


def seal_refresh_result(sealer: Encryptor, key: str, tokens: TokenSet, write_format: int) -> bytes:
    """``tokens`` encoded in ``write_format`` and encrypted with the store key as associated data."""
    return sealer.encrypt(encode_tokens(tokens, write_format), key.encode())


def open_refresh_result(sealer: Encryptor, key: str, blob: bytes) -> TokenSet | None:
    """The tokens sealed under ``key``, or None when unreadable. Raises ``SessionFormatUnsupported`` for a result in
    a format this release does not read: spending the token again instead could make the IdP revoke the token family
    (RFC 9700 4.14.2)."""
    try:
        return decode_tokens(sealer.decrypt(blob, key.encode()))
    except UnsupportedFormat as exc:
        logger.warning("refresh result has store format %d, which this release does not read", exc.number)
        raise SessionFormatUnsupported(
            f"this session was refreshed by a newer release of bff (store format {exc.number})"
        ) from exc
    except (DecryptionError, ValueError, KeyError, TypeError):
        return None
