from __future__ import annotations

import hashlib

import pytest
from itsdangerous import BadSignature, Signer

from bff.cookies import SESSION_SALT, CookieSigner, clear_cookie, read_cookie, set_cookie

KEYS = ["k" * 40]


def test_sign_and_unsign() -> None:
    signer = CookieSigner(KEYS, SESSION_SALT)
    signed = signer.sign("session-id")
    assert signed.startswith("session-id.")
    assert signer.unsign(signed) == "session-id"


def test_bad_values_are_none() -> None:
    signer = CookieSigner(KEYS, SESSION_SALT)
    signed = signer.sign("session-id")
    assert signer.unsign(None) is None
    assert signer.unsign("") is None
    assert signer.unsign("session-id") is None
    assert signer.unsign(signed[:-1] + ("A" if signed[-1] != "A" else "B")) is None
    assert signer.unsign("other-id" + signed[len("session-id") :]) is None
    assert signer.unsign("x" * 600) is None
    assert signer.unsign("caf\u00e9.sig") is None


def test_a_verification_is_remembered_and_gives_the_same_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = CookieSigner._verify

    def counting(self: CookieSigner, value: str) -> str | None:
        calls.append(value)
        return real(self, value)

    monkeypatch.setattr(CookieSigner, "_verify", counting)
    signer = CookieSigner(KEYS, SESSION_SALT)
    signed = signer.sign("session-id")
    tampered = signed[:-1] + ("A" if signed[-1] != "A" else "B")
    for _ in range(3):
        assert signer.unsign(signed) == "session-id"
        assert signer.unsign(tampered) is None
    assert calls == [signed, tampered]  # each verified once
    assert CookieSigner(["n" * 40], SESSION_SALT).unsign(signed) is None  # another ring remembers nothing of this one


def test_cookies_signed_by_itsdangerous_with_any_key_of_the_ring_verify() -> None:
    ring = ["o" * 40, "caf\u00e9-key-" + "p" * 30, "n" * 40]
    signer = CookieSigner(ring, SESSION_SALT)
    for key in ring:
        signed = Signer(key, salt=SESSION_SALT, digest_method=hashlib.sha256).sign("session.id-with.dots").decode()
        assert signer.unsign(signed) == "session.id-with.dots"
    assert Signer(ring, salt=SESSION_SALT, digest_method=hashlib.sha256).unsign(signer.sign("v")) == b"v"


def test_hostile_signatures_are_refused_where_itsdangerous_refuses_them_and_where_they_are_not_canonical() -> None:
    signer = CookieSigner(KEYS, SESSION_SALT)
    reference = Signer(KEYS, salt=SESSION_SALT, digest_method=hashlib.sha256)
    signed = signer.sign("session-id")
    value, _, signature = signed.rpartition(".")
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(signature[-1])
    # The last of 43 characters carries 4 bits of the MAC and 2 unused ones: a decoder that ignores them accepts
    # three other spellings of the same MAC.
    other_spellings = [
        signature[:-1] + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last ^ low]
        for low in (1, 2, 3)
    ]
    hostile = [
        f"{value}.{signature}=",
        f"{value}.{signature}==",
        *(f"{value}.{s}" for s in other_spellings),
        f"{value}.{signature[:-1]}",
        f"{value}..{signature}",
        f".{signature}",
        f"{value}.",
        f"{value}.{signature}.{signature}",
        f"{value}.{signature.upper()}",
        f"{value}.{signature.replace('-', '+').replace('_', '/')}",
        f"{value} .{signature}",
    ]
    for candidate in hostile:
        assert signer.unsign(candidate) is None, candidate
    # Ours is at least as strict as itsdangerous: nothing it refuses is accepted.
    for candidate in [*hostile, signed, "x.y", "session-id"]:
        try:
            theirs: str | None = reference.unsign(candidate).decode()
        except BadSignature:
            theirs = None
        assert signer.unsign(candidate) in (None, theirs)


def test_salts_separate_purposes() -> None:
    assert CookieSigner(KEYS, "a").unsign(CookieSigner(KEYS, "b").sign("v")) is None


def test_key_rotation() -> None:
    old = CookieSigner(KEYS, SESSION_SALT).sign("v")
    rotated = CookieSigner([*KEYS, "n" * 40], SESSION_SALT)
    assert rotated.unsign(old) == "v"
    assert CookieSigner(["n" * 40], SESSION_SALT).unsign(old) is None


def test_set_cookie_attributes() -> None:
    header = set_cookie("__Host-bff", "abc.def", max_age=3600)
    parts = [p.strip() for p in header.split(";")]
    assert parts[0] == "__Host-bff=abc.def"
    assert {"HttpOnly", "Secure", "SameSite=Strict", "Path=/", "Max-Age=3600"} <= set(parts)
    assert not any(p.lower().startswith("domain") for p in parts)
    assert "SameSite=Lax" in set_cookie("__Host-bff-login", "x", same_site="lax")


def test_clear_cookie() -> None:
    header = clear_cookie("__Host-bff")
    assert header.startswith("__Host-bff=")
    assert "Max-Age=0" in header
    assert "Secure" in header


def test_read_cookie() -> None:
    assert read_cookie("a=1; __Host-bff=xyz; b=2", "__Host-bff") == "xyz"
    assert read_cookie("a=1", "__Host-bff") is None
    assert read_cookie(None, "__Host-bff") is None
    assert read_cookie("garbage;;;=", "__Host-bff") is None
    assert read_cookie("x__Host-bff=1", "__Host-bff") is None
