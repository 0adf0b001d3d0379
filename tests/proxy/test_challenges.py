"""``WWW-Authenticate`` parsing (RFC 9110 11.6.1) and the step-up challenge (RFC 9470 3), against hostile fields."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bff.proxy.challenges import (
    MAX_CHALLENGES,
    MAX_FIELD,
    MAX_FIELDS,
    Challenge,
    asks_step_up,
    dpop_challenge_error,
    parse_challenges,
    step_up_challenge,
    step_up_refusal,
)
from bff.step_up import MAX_ACR_VALUES, MAX_ACR_VALUES_LENGTH, StepUp

WWW = b"www-authenticate"
STEP_UP = b'Bearer error="insufficient_user_authentication"'


def fields(*values: bytes) -> list[tuple[bytes, bytes]]:
    return [(WWW, v) for v in values]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Bearer", [Challenge("bearer")]),
        ('Basic realm="simple"', [Challenge("basic", {"realm": "simple"})]),
        # RFC 9110 11.6.1's own example: two challenges in one field, a quoted-string with escapes.
        (
            'Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple"',
            [
                Challenge("newauth", {"realm": "apps", "type": "1", "title": 'Login to "apps"'}),
                Challenge("basic", {"realm": "simple"}),
            ],
        ),
        ("BEARER ERROR = INVALID_TOKEN", [Challenge("bearer", {"error": "INVALID_TOKEN"})]),
        ("Negotiate abc+/def==, Bearer", [Challenge("negotiate", token68="abc+/def=="), Challenge("bearer")]),
        (" , Bearer realm=x ,, ", [Challenge("bearer", {"realm": "x"})]),
        ('Bearer realm="a,b", error="x y"', [Challenge("bearer", {"realm": "a,b", "error": "x y"})]),
    ],
)
def test_well_formed_fields(value: str, expected: list[Challenge]) -> None:
    assert parse_challenges(value) == (expected, True)


@pytest.mark.parametrize(
    "value",
    [
        'Bearer realm="unterminated',
        'Bearer realm="x" y',
        "Bearer a=b c",
        'Bearer error="a", error="b"',  # RFC 9110 11.2: a parameter name occurs once per challenge
        "Bearer =x",
        '"Bearer"',
        "Bearer realm=\x00",
        'Bearer realm="\x7f"',
        "Bearer realm=x\r\nSet-Cookie: a=b",
    ],
)
def test_malformed_fields(value: str) -> None:
    assert parse_challenges(value)[1] is False


def test_bounds() -> None:
    assert parse_challenges("Bearer realm=" + "x" * MAX_FIELD) == ([], False)
    assert parse_challenges(", ".join(["Basic"] * (MAX_CHALLENGES + 1)))[1] is False
    assert parse_challenges(", ".join(["Basic"] * MAX_CHALLENGES))[1] is True
    many = fields(*[b"Basic"] * MAX_FIELDS, STEP_UP + b", max_age=5")
    assert step_up_challenge(many) is None
    assert step_up_challenge(many[-2:]) == StepUp(max_age=5)


def test_step_up_challenge_reads_acr_values_and_max_age() -> None:
    raw = fields(b'Bearer realm="api", ' + STEP_UP[7:] + b', acr_values="urn:a urn:b", max_age=300, other="x"')
    assert step_up_challenge(raw) == StepUp(acr_values=("urn:a", "urn:b"), max_age=300)
    # In a field of its own after another, and for a DPoP token (RFC 9449 7.1 uses the same error codes).
    assert step_up_challenge(fields(b'Basic realm="x"', b'DPoP algs="ES256", ' + STEP_UP[7:] + b", max_age=0")) == (
        StepUp(max_age=0)
    )
    # Quoted or not, escapes removed: the value is what counts.
    assert step_up_challenge(fields(STEP_UP + b', acr_values="urn\\:a"')) == StepUp(acr_values=("urn:a",))


@pytest.mark.parametrize(
    "raw",
    [
        fields(STEP_UP),  # asks for nothing bff could ask the IdP for
        fields(STEP_UP + b', acr_values=""'),
        fields(STEP_UP + b', acr_values="a  b"'),
        fields(STEP_UP + b', acr_values="urn:a&prompt=none"'),
        fields(STEP_UP + b', acr_values="<script>"'),
        fields(STEP_UP + b', acr_values="' + b"a" * (MAX_ACR_VALUES_LENGTH + 1) + b'"'),
        fields(STEP_UP + b', acr_values="' + b" ".join(b"v%d" % i for i in range(MAX_ACR_VALUES + 1)) + b'"'),
        fields(STEP_UP + b", max_age=-1"),
        fields(STEP_UP + b", max_age=1e3"),
        fields(STEP_UP + b", max_age=99999999999"),
        fields(STEP_UP + b", max_age=\xd9\xa3"),  # not ASCII digits
        fields(STEP_UP + b", max_age=5, max_age=6"),
        fields(STEP_UP + b", max_age=5", STEP_UP + b", max_age=6"),  # two: which one is meant?
        fields(STEP_UP + b", max_age=5", b'Basic realm="broken'),  # any malformed field: pass through
        fields(b'Bearer error="invalid_token", max_age=5'),
        fields(b'Basic error="insufficient_user_authentication", max_age=5'),
        [(b"x-www-authenticate", STEP_UP + b", max_age=5")],
    ],
)
def test_no_step_up_from_a_malformed_or_foreign_challenge(raw: list[tuple[bytes, bytes]]) -> None:
    assert step_up_challenge(raw) is None
    assert step_up_refusal(raw, ()) is None


def test_step_up_refusal_respects_the_allow_list() -> None:
    raw = fields(STEP_UP + b', acr_values="urn:mfa urn:hwk", max_age=60')
    refusal = step_up_refusal(raw, ())
    assert refusal is not None
    assert refusal.details() == {
        "login_url": "/bff/login?acr_values=urn:mfa+urn:hwk&max_age=60",
        "acr_values": "urn:mfa urn:hwk",
        "max_age": 60,
    }
    assert step_up_refusal(raw, ("urn:mfa",)) is None
    assert step_up_refusal(raw, ("urn:mfa", "urn:hwk", "urn:pwd")) is not None


def test_under_a_frontends_path_prefix_the_login_url_keeps_the_prefix() -> None:
    refusal = step_up_refusal(fields(STEP_UP + b", max_age=0"), (), "/admin")
    assert refusal is not None
    assert refusal.details()["login_url"] == "/admin/bff/login?max_age=0"


def test_lenient_readings_for_refresh_and_dpop() -> None:
    # The challenges before a syntax error still count for a refresh or a nonce (one replay at worst).
    assert dpop_challenge_error(fields(b'DPoP error="use_dpop_nonce", Basic realm="broken')) == b"use_dpop_nonce"
    assert dpop_challenge_error(fields(b'Bearer error="invalid_token"')) is None
    assert asks_step_up(fields(STEP_UP))
    assert asks_step_up(fields(b"DPoP error=insufficient_user_authentication"))
    assert not asks_step_up(fields(b'Bearer error="invalid_token"'))


_FIELD_BYTES = st.one_of(
    st.binary(max_size=300),
    st.lists(
        st.sampled_from(
            [b"Bearer", b"DPoP", b" ", b",", b"=", b'"', b"\\", b"error", b"insufficient_user_authentication",
             b"acr_values", b"max_age", b"urn:a", b"0", b"300", b"\t", b"\xff", b"\x00", b"a b"]
        ),
        max_size=40,
    ).map(b"".join),
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(_FIELD_BYTES, max_size=4))
def test_arbitrary_fields_never_raise_nor_yield_unsafe_values(values: list[bytes]) -> None:
    raw = fields(*values)
    step_up = step_up_challenge(raw)
    refusal = step_up_refusal(raw, ())
    assert (step_up is None) == (refusal is None)
    if step_up is not None:
        assert step_up
        assert all(v and all(c.isascii() and (c.isalnum() or c in ":._~/-") for c in v) for v in step_up.acr_values)
        assert len(" ".join(step_up.acr_values)) <= MAX_ACR_VALUES_LENGTH
        assert step_up.max_age is None or 0 <= step_up.max_age <= 366 * 24 * 3600
        assert step_up.login_url().startswith("/bff/login?")
        assert all(c.isascii() and c.isprintable() and c not in "\"'<> " for c in step_up.login_url())
    dpop_challenge_error(raw)
    asks_step_up(raw)
