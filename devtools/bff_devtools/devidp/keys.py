"""Signing keys: asymmetric only (ES256 by default, RS256 selectable), kept as files in ``data_dir``, rotated.

Files (the directory is created 0700, every file 0600, written to a temporary name and renamed into place, so a
reader never sees half a key):

* ``signing-key.pem``: the private key that signs every token (PKCS#8 PEM). Generated at first start.
* ``retired-keys.json``: public JWKs of earlier signing keys, each with ``retire_after`` (seconds since the epoch).
  Their private halves are deleted at rotation: a retired key can verify, never sign.

Rotation (:func:`rotate_key`, ``bff devidp rotate-key``, the admin page, or starting with another ``--alg``)
retires the current key for ``keep_old_for`` seconds (the longest token lifetime) and generates a new one. The JWKS
publishes the new key beside the retired ones until they expire, so tokens signed just before the rotation still
verify (RFC 7517; OpenID Connect Core 10.1.1 "Rotation of Asymmetric Signing Keys"). ``kid`` is the RFC 7638 JWK
thumbprint, so a key's id follows from the key itself.

A running IdP notices a rotation done by another process (the CLI) by the files' modification stamps, checked on
each use (one ``stat`` per file), and reloads. Keys are never committed: the default ``data_dir``
(``.bff-data/devidp``) is gitignored.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from bff.errors import ConfigError
from bff.types import Clock, JSONObject, system_clock
from bff_devtools.devidp.settings import Alg

logger = logging.getLogger("bff_devtools.devidp.keys")

SIGNING_KEY_FILE = "signing-key.pem"
RETIRED_KEYS_FILE = "retired-keys.json"
#: The default of ``keep_old_for``: the default access token lifetime.
DEFAULT_KEEP_OLD_FOR = 900.0

AsymmetricKey = ECKey | RSAKey


@dataclass(frozen=True)
class SigningKey:
    key: AsymmetricKey
    alg: Alg

    @property
    def kid(self) -> str:
        return str(self.key.kid)

    def public_jwk(self) -> JSONObject:
        return {**self.key.as_dict(private=False), "alg": self.alg, "use": "sig"}


@dataclass(frozen=True)
class RetiredKey:
    jwk: JSONObject
    retire_after: float


def generate_key(alg: Alg) -> AsymmetricKey:
    """A new private key for ``alg`` whose ``kid`` is its RFC 7638 thumbprint."""
    params: Any = {"use": "sig", "alg": alg}
    if alg == "ES256":
        return ECKey.generate_key("P-256", parameters=params, private=True, auto_kid=True)
    return RSAKey.generate_key(2048, parameters=params, private=True, auto_kid=True)


def _alg_of(key: AsymmetricKey) -> Alg | None:
    if isinstance(key, ECKey):
        return "ES256" if key.curve_name == "P-256" else None
    return "RS256"


def _read_signing_key(data_dir: Path) -> SigningKey | None:
    path = data_dir / SIGNING_KEY_FILE
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        return None
    if path.stat().st_mode & 0o077:
        logger.warning("%s is readable by other users; it should be mode 0600", path)
    for key_type in (ECKey, RSAKey):
        try:
            key: AsymmetricKey = key_type.import_key(pem)
        except (JoseError, ValueError, TypeError):
            continue
        alg = _alg_of(key)
        if key.is_private and alg is not None:
            key.ensure_kid()
            return SigningKey(key, alg)
    raise ConfigError([f"{path}: not a PEM EC P-256 or RSA private key"])


def _read_retired(data_dir: Path) -> list[RetiredKey]:
    try:
        data = json.loads((data_dir / RETIRED_KEYS_FILE).read_text())
        return [RetiredKey(dict(item["jwk"]), float(item["retire_after"])) for item in data["keys"]]
    except FileNotFoundError:
        return []
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError([f"{data_dir / RETIRED_KEYS_FILE}: not a retired-keys file ({exc})"]) from exc


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600, atomically (temporary file + rename)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _write_signing_key(data_dir: Path, key: AsymmetricKey) -> None:
    _write_private(data_dir / SIGNING_KEY_FILE, key.as_pem(private=True))


def _write_retired(data_dir: Path, retired: list[RetiredKey]) -> None:
    body = {"keys": [{"jwk": r.jwk, "retire_after": r.retire_after} for r in retired]}
    _write_private(data_dir / RETIRED_KEYS_FILE, json.dumps(body, indent=2).encode())


def rotate_key(
    data_dir: Path,
    *,
    alg: Alg | None = None,
    keep_old_for: float = DEFAULT_KEEP_OLD_FOR,
    clock: Clock = system_clock,
) -> str:
    """Retire the current signing key (published for ``keep_old_for`` more seconds) and sign with a new one.

    ``alg`` defaults to the current key's. Returns the new key's ``kid``. Also used at first start (no current
    key: nothing is retired) and by a running IdP.
    """
    now = clock()
    current = _read_signing_key(data_dir)
    retired = [r for r in _read_retired(data_dir) if r.retire_after > now]  # forget the expired ones
    if current is not None:
        retired.append(RetiredKey(current.public_jwk(), now + keep_old_for))
    new = generate_key(alg or (current.alg if current is not None else "ES256"))
    # Retired list first: a reader between the two writes sees the old key twice (deduplicated), never not at all.
    _write_retired(data_dir, retired)
    _write_signing_key(data_dir, new)
    logger.info("new signing key %s; the previous one is published until it retires", new.kid)
    return str(new.kid)


@dataclass(frozen=True)
class _Snapshot:
    stamp: tuple[tuple[int, int], ...]
    signing: SigningKey
    retired: tuple[RetiredKey, ...]


class KeyRing:
    """The IdP's keys as read from ``data_dir``: the newest signs, all live ones verify and are published."""

    def __init__(self, data_dir: Path, alg: Alg, *, keep_old_for: float, clock: Clock = system_clock) -> None:
        self.data_dir = data_dir
        self.alg = alg
        self.keep_old_for = keep_old_for
        self._clock = clock
        self._snapshot: _Snapshot | None = None

    def load(self) -> None:
        """Read the keys, generating the first one, or rotating when the configured ``alg`` changed."""
        current = _read_signing_key(self.data_dir)
        if current is None or current.alg != self.alg:
            if current is not None:
                logger.info("signing algorithm changed from %s to %s: rotating the key", current.alg, self.alg)
            rotate_key(self.data_dir, alg=self.alg, keep_old_for=self.keep_old_for, clock=self._clock)
        self._snapshot = None
        self._current()

    def rotate(self) -> str:
        kid = rotate_key(self.data_dir, alg=self.alg, keep_old_for=self.keep_old_for, clock=self._clock)
        self._snapshot = None
        return kid

    @property
    def signing_key(self) -> SigningKey:
        return self._current().signing

    def jwks(self) -> JSONObject:
        """The JWK Set (RFC 7517 5): the signing key first, then the retired keys that are still live."""
        snapshot = self._current()
        now = self._clock()
        keys = [snapshot.signing.public_jwk()]
        seen = {snapshot.signing.kid}
        for retired in snapshot.retired:
            if retired.retire_after > now and retired.jwk.get("kid") not in seen:
                keys.append(retired.jwk)
                seen.add(str(retired.jwk.get("kid")))
        return {"keys": keys}

    def verification_keys(self) -> KeySet:
        keys: list[AsymmetricKey] = []
        for jwk in self.jwks()["keys"]:
            key_type = ECKey if jwk.get("kty") == "EC" else RSAKey
            keys.append(key_type.import_key(jwk))
        return KeySet(keys)  # type: ignore[arg-type]  # KeySet is typed for the union of every key type

    def algorithms(self) -> list[str]:
        return sorted({str(jwk["alg"]) for jwk in self.jwks()["keys"]})

    def sign(self, claims: JSONObject, *, typ: str) -> str:
        """A JWS compact JWT over ``claims`` with the signing key; ``typ`` per RFC 8725 3.11 (explicit typing)."""
        signing = self.signing_key
        header = {"alg": signing.alg, "kid": signing.kid, "typ": typ}
        return jwt.encode(header, claims, signing.key, algorithms=[signing.alg])

    def _current(self) -> _Snapshot:
        stamp = self._stamp()
        snapshot = self._snapshot
        if snapshot is None or snapshot.stamp != stamp:
            signing = _read_signing_key(self.data_dir)
            if signing is None:
                raise ConfigError([f"{self.data_dir / SIGNING_KEY_FILE}: the signing key is missing"])
            snapshot = _Snapshot(stamp, signing, tuple(_read_retired(self.data_dir)))
            if self._snapshot is not None:
                logger.info("signing keys changed on disk: now signing with %s", signing.kid)
            self._snapshot = snapshot  # one assignment: readers in other threads see the old or the new snapshot
        return snapshot

    def _stamp(self) -> tuple[tuple[int, int], ...]:
        stamps = []
        for name in (SIGNING_KEY_FILE, RETIRED_KEYS_FILE):
            try:
                st = os.stat(self.data_dir / name)
                stamps.append((st.st_mtime_ns, st.st_ino))
            except FileNotFoundError:
                stamps.append((0, 0))
        return tuple(stamps)
