from __future__ import annotations

import pytest
from itsdangerous import Signer

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
    signer = CookieSigner(KEYS, SESSION_SALT)
    signed = signer.sign("session-id")
    tampered = signed[:-1] + ("A" if signed[-1] != "A" else "B")
    calls: list[bytes] = []
    real = Signer.unsign

    def counting(self: Signer, value: bytes) -> bytes:
        calls.append(value)
        return real(self, value)

    monkeypatch.setattr(Signer, "unsign", counting)
    for _ in range(3):
        assert signer.unsign(signed) == "session-id"
        assert signer.unsign(tampered) is None
    assert calls == [signed.encode(), tampered.encode()]  # each verified once
    assert CookieSigner(["n" * 40], SESSION_SALT).unsign(signed) is None  # another ring remembers nothing of this one


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
