"""Settings are validated at once (every problem named), secrets stay out of ``repr``, passwords are scrypt."""

from __future__ import annotations

from pathlib import Path

import pytest

from bff.errors import ConfigError
from bff_devtools.devidp import ClientRegistration, DevIdPSettings, default_users
from bff_devtools.devidp.passwords import hash_password, verify_password


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    public_machine = ClientRegistration("machine", None, grant_types=("client_credentials",))
    twice = ClientRegistration("twice", "a-secret-of-enough-length", redirect_uris=("/relative",))
    with pytest.raises(ConfigError) as raised:
        DevIdPSettings(
            issuer="http://localhost:9000/",
            data_dir=tmp_path,
            access_token_ttl=0,
            clients=(public_machine, twice, twice),
            alg="HS256",  # type: ignore[arg-type]
        )
    problems = "\n".join(raised.value.problems)
    for expected in (
        "issuer: must have no query, fragment or trailing slash",
        "access_token_ttl: must be at least 1 second",
        "clients: 'twice' is defined twice",
        "clients[machine]: a public client cannot use client_credentials",
        "clients[twice]: '/relative' is not an absolute http(s) URL",
        "alg: must be one of ES256, RS256",
    ):
        assert expected in problems
    assert len(raised.value.problems) == 7  # the duplicate's relative URL is reported for each definition


def test_plain_http_only_on_loopback(tmp_path: Path) -> None:
    for issuer in ("http://localhost:9000", "http://idp.localhost:9000", "http://127.0.0.1:9000", "http://[::1]:9"):
        assert DevIdPSettings(issuer=issuer, data_dir=tmp_path).issuer == issuer
    with pytest.raises(ConfigError, match="plain http only for a loopback host"):
        DevIdPSettings(issuer="http://idp.example.com", data_dir=tmp_path)


def test_a_short_client_secret_is_refused(tmp_path: Path) -> None:
    client = ClientRegistration("c", "short", redirect_uris=("https://app.example.com/cb",))
    with pytest.raises(ConfigError, match="at least 16 characters"):
        DevIdPSettings(issuer="https://idp.example.com", data_dir=tmp_path, clients=(client,))


def test_secrets_stay_out_of_repr(tmp_path: Path) -> None:
    client = ClientRegistration("c", "the-client-secret-value", redirect_uris=("https://app.example.com/cb",))
    settings = DevIdPSettings(issuer="https://idp.example.com", data_dir=tmp_path, clients=(client,))
    shown = repr(settings)
    assert "the-client-secret-value" not in shown
    assert "scrypt$" not in shown
    assert "wonderland" not in shown
    assert settings.secure_cookies


def test_default_users() -> None:
    alice, bob = default_users()
    assert (alice.username, alice.role, bob.username, bob.role) == ("alice", "admin", "bob", "user")
    assert verify_password("wonderland", alice.password_hash)
    assert verify_password("builder", bob.password_hash)
    assert not verify_password("builder", alice.password_hash)


def test_password_hashes() -> None:
    encoded = hash_password("correct horse")
    assert encoded.startswith("scrypt$16384$8$1$")
    assert encoded != hash_password("correct horse")  # salted
    assert verify_password("correct horse", encoded)
    assert not verify_password("correct horsE", encoded)
    assert not verify_password("correct horse", None)  # no such user
    assert not verify_password("correct horse", "scrypt$bad")
    assert not verify_password("correct horse", "md5$1$2$3$4$5")
