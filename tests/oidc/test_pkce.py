"""PKCE helpers (RFC 7636) and the one-time values of an authorization request."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from hypothesis import given, settings
from hypothesis import strategies as st

from bff.oidc.pkce import new_code_verifier, new_nonce, new_state, s256_challenge


def test_s256_challenge_matches_rfc7636_appendix_b() -> None:
    assert (
        s256_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )


def test_code_verifier_is_valid_and_fresh() -> None:
    verifiers = {new_code_verifier() for _ in range(50)}
    assert len(verifiers) == 50
    for verifier in verifiers:
        assert re.fullmatch(r"[A-Za-z0-9\-._~]{43,128}", verifier)
        assert re.fullmatch(r"[A-Za-z0-9\-_]{43}", s256_challenge(verifier))


@pytest.mark.parametrize("verifier", ["short", "x" * 129, "a" * 42 + "+", "a" * 42 + "="])
def test_invalid_code_verifier_is_refused(verifier: str) -> None:
    with pytest.raises(ValueError, match="RFC 7636"):
        s256_challenge(verifier)


def test_state_and_nonce_carry_at_least_256_bits() -> None:
    values = {new_state() for _ in range(50)} | {new_nonce() for _ in range(50)}
    assert len(values) == 100
    assert all(len(value) >= 43 for value in values)  # 43 base64url characters = 258 bits


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~", min_size=43, max_size=128)
)
def test_s256_challenge_agrees_with_authlib_for_every_valid_verifier(verifier: str) -> None:
    """authlib (the reference IdP's PKCE check, a test-only oracle here) accepts every challenge bff sends."""
    assert s256_challenge(verifier) == create_s256_code_challenge(verifier)


def test_the_product_computes_pkce_without_authlib() -> None:
    """PKCE is the RFC's recipe over the standard library: importing it loads no authlib."""
    probe = "import sys, bff.endpoints.login; print(any(m.split('.')[0] == 'authlib' for m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "False"
