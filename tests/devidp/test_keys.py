"""Signing keys: generated at first start (0600, kid = RFC 7638 thumbprint), kept across restarts, rotated with
the old key published until its tokens expire; ``bff devidp rotate-key`` reaches a running IdP."""

from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path

import pytest
from joserfc.jwk import ECKey, RSAKey

from bff_devtools.devidp.cli import add_devidp_parser
from bff_devtools.devidp.keys import RETIRED_KEYS_FILE, SIGNING_KEY_FILE, KeyRing, rotate_key
from tests.support.browser import Browser
from tests.support.clock import FakeClock
from tests.support.devidp import OAuthClient, running_devidp, unverified


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def pem_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.pem"))


async def test_the_first_start_generates_a_private_key_file(tmp_path: Path, browser: Browser) -> None:
    data_dir = tmp_path / "keys"
    with running_devidp(data_dir) as idp:
        oauth = OAuthClient(idp, browser)
        try:
            jwks = (await oauth.http.get(f"{idp.url}/jwks")).json()
        finally:
            await oauth.aclose()
    assert mode(data_dir) == 0o700
    assert mode(data_dir / SIGNING_KEY_FILE) == 0o600
    assert mode(data_dir / RETIRED_KEYS_FILE) == 0o600
    assert (data_dir / SIGNING_KEY_FILE).read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    [published] = jwks["keys"]
    assert published["kty"] == "EC"
    assert published["crv"] == "P-256"
    assert (published["alg"], published["use"]) == ("ES256", "sig")
    assert "d" not in published  # never the private part
    assert published["kid"] == ECKey.import_key(published).thumbprint()  # RFC 7638


async def test_keys_survive_a_restart(tmp_path: Path, browser: Browser) -> None:
    kids = []
    for _ in range(2):
        with running_devidp(tmp_path) as idp:
            oauth = OAuthClient(idp, browser)
            try:
                kids.append([k["kid"] for k in (await oauth.http.get(f"{idp.url}/jwks")).json()["keys"]])
            finally:
                await oauth.aclose()
    assert kids[0] == kids[1]
    assert len(kids[0]) == 1


async def test_rotation_keeps_the_old_key_published(tmp_path: Path, browser: Browser) -> None:
    with running_devidp(tmp_path) as idp:
        oauth = OAuthClient(idp, browser)
        try:
            before = await oauth.login()
            old_kid = unverified(before["access_token"])[0]["kid"]
            new_kid = rotate_key(tmp_path, keep_old_for=900)  # as `bff devidp rotate-key` does, from outside
            assert new_kid != old_kid
            jwks = (await oauth.http.get(f"{idp.url}/jwks")).json()
            after = await oauth.login()
            # Tokens signed before the rotation still verify against the JWKS; new ones use the new key.
            await oauth.verify(before["access_token"], typ="at+jwt")
            await oauth.verify(before["id_token"], typ="JWT")
            await oauth.verify(after["access_token"], typ="at+jwt")
        finally:
            await oauth.aclose()
    assert [k["kid"] for k in jwks["keys"]] == [new_kid, old_kid]  # the signing key first
    assert unverified(after["access_token"])[0]["kid"] == new_kid
    assert unverified(after["id_token"])[0]["kid"] == new_kid
    assert pem_files(tmp_path) == [SIGNING_KEY_FILE]  # the old private key is gone


def test_a_retired_key_leaves_the_jwks_when_its_tokens_have_expired(tmp_path: Path) -> None:
    clock = FakeClock()
    ring = KeyRing(tmp_path, "ES256", keep_old_for=900, clock=clock)
    ring.load()
    old = ring.signing_key.kid
    new = ring.rotate()
    assert [k["kid"] for k in ring.jwks()["keys"]] == [new, old]
    clock.advance(899)
    assert len(ring.jwks()["keys"]) == 2
    clock.advance(1)
    assert [k["kid"] for k in ring.jwks()["keys"]] == [new]
    rotate_key(tmp_path, keep_old_for=900, clock=clock)  # expired entries are dropped from the file
    assert len(ring.jwks()["keys"]) == 2


def test_changing_the_algorithm_rotates_the_key(tmp_path: Path) -> None:
    clock = FakeClock()
    es256 = KeyRing(tmp_path, "ES256", keep_old_for=900, clock=clock)
    es256.load()
    rs256 = KeyRing(tmp_path, "RS256", keep_old_for=900, clock=clock)
    rs256.load()
    assert rs256.signing_key.alg == "RS256"
    assert isinstance(rs256.signing_key.key, RSAKey)
    assert [k["alg"] for k in rs256.jwks()["keys"]] == ["RS256", "ES256"]
    assert rs256.algorithms() == ["ES256", "RS256"]
    assert rs256.signing_key.kid == rs256.signing_key.key.thumbprint()


def test_a_file_that_is_not_a_key_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / SIGNING_KEY_FILE).write_text("not a key")
    ring = KeyRing(tmp_path, "ES256", keep_old_for=900)
    with pytest.raises(Exception, match="not a PEM"):
        ring.load()


def test_the_rotate_key_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = rotate_key(tmp_path)
    parser = argparse.ArgumentParser(prog="bff")
    add_devidp_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["devidp", "rotate-key", "--data-dir", str(tmp_path), "--keep-old-for", "1h"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    ring = KeyRing(tmp_path, "ES256", keep_old_for=900)
    ring.load()
    assert ring.signing_key.kid in out
    assert [k["kid"] for k in ring.jwks()["keys"]] == [ring.signing_key.kid, first]
