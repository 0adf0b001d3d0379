"""The redaction filter: every pattern it masks, with the cases it must leave alone, and the invariant that a
secret placed anywhere in a message or an extra field never survives formatting (text and JSON)."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bff.telemetry.logs import JsonFormatter, TextFormatter
from bff.telemetry.redaction import RedactingFilter, redact

SECRET = "s3cr3tV4lue-0123456789_abcdefXYZ"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz"
BASIC = "c3BhLWJmZjp0b3Atc2VjcmV0LXBhc3N3b3Jk"

MASKED = [
    f"Authorization: Bearer {SECRET}",
    f"authorization: bearer {SECRET}",
    f"Authorization: Basic {BASIC}",
    f"Authorization: DPoP {SECRET}",
    f"Proxy-Authorization: Negotiate {SECRET}",
    f"[(b'authorization', b'Token {SECRET}')]",
    f'{{"access_token": "{SECRET}", "token_type": "Bearer"}}',
    f'{{"refresh_token":"{SECRET}"}}',
    f'{{"id_token": "{SECRET}"}}',
    f"{{'access_token': '{SECRET}'}}",
    f'body was {{\\"refresh_token\\": \\"{SECRET}\\"}}',
    f"grant_type=refresh_token&refresh_token={SECRET}&client_id=spa",
    f"grant_type=authorization_code&code={SECRET}&code_verifier={SECRET}x",
    f"client_secret={SECRET}",
    f"client_assertion={SECRET}&client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    f"GET /bff/callback?code={SECRET}&state={SECRET}y HTTP/1.1",
    f"id_token_hint={SECRET}",
    f"logout_token={SECRET}",
    f"subject_token={SECRET}",
    f"nonce={SECRET}",
    f"password={SECRET}",
    f"return_to=%2Fcb%3Fcode%3D{SECRET}",
    f"%22access_token%22%3A%22{SECRET}%22",
    f"Cookie: theme=dark; __Host-bff={SECRET}",
    f"cookie={SECRET}",
    f"Set-Cookie: __Host-bff={SECRET}; Path=/; Secure; HttpOnly",
    f"[(b'cookie', b'__Host-bff={SECRET}')]",
    f"session cookie __Host-bff={SECRET} refused",
    f"__Host-bff-login-1={SECRET}",
    f"token {JWT} refused",
    f"key{JWT}",
    f"jwe eyJhbGciOiJSU0EtT0FFUCJ9.{SECRET}.aXY.Y2lwaGVy.dGFn",
]

KEPT = [
    "identity provider metadata loaded from https://idp.example.com",
    "GET /api/orders/7 HTTP/1.1 200",
    "token refresh failed, keeping the session: the identity provider did not answer in time",
    "login refused by the IdP: access_denied",
    "http.response.status_code=200 error_code=upstream_timeout",
    '"token_type": "Bearer", "expires_in": 300',
    "barcode scanned",
    "back-channel logout ended 2 session(s) (by sid)",
    "JWKS https://idp.example.com/jwks: key 2 skipped (kid is not a string)",
]


@pytest.mark.parametrize("text", MASKED)
def test_each_pattern_masks_its_secret(text: str) -> None:
    out = redact(text)
    for secret in (SECRET, JWT, BASIC):
        assert secret not in out
    assert "REDACTED" in out


@pytest.mark.parametrize("text", KEPT)
def test_ordinary_messages_pass_unchanged(text: str) -> None:
    assert redact(text) == text


def fail(message: str = f"IdP said refresh_token={SECRET}") -> None:
    raise ValueError(message)


def record(msg: str, *args: object, extra: dict[str, object] | None = None, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            fail()
        except ValueError:
            exc_info = sys.exc_info()
    rec = logging.LogRecord("bff.test", logging.WARNING, __file__, 1, msg, args or None, exc_info)
    for key, value in (extra or {}).items():
        rec.__dict__[key] = value  # as Logger.makeRecord stores extra= fields
    return rec


def rendered(rec: logging.LogRecord, formatter: logging.Formatter) -> str:
    assert RedactingFilter().filter(rec)
    return formatter.format(rec)


FORMATTERS = [pytest.param(TextFormatter(), id="text"), pytest.param(JsonFormatter(), id="json")]


@pytest.mark.parametrize("formatter", FORMATTERS)
def test_arguments_extras_and_exceptions_are_redacted(formatter: logging.Formatter) -> None:
    rec = record(
        "call %s with %r",
        f"Bearer {SECRET}",
        {"refresh_token": SECRET},
        extra={
            "url.path": f"/cb?code={SECRET}",
            "http.request.header.authorization": f"Token {SECRET}",
            "access_token": SECRET,
            "details": {"client_secret": SECRET, "items": [JWT, b"cookie: __Host-bff=" + SECRET.encode()]},
            "cookie": SECRET,
        },
        exc=True,
    )
    out = rendered(rec, formatter)
    assert SECRET not in out
    assert JWT not in out


def test_sensitive_extra_keys_are_masked_whatever_their_value() -> None:
    out = json.loads(rendered(record("x", extra={"client_secret": "plain", "state": "abc", "n": 3}), JsonFormatter()))
    assert out["client_secret"] == "[REDACTED]"
    assert out["state"] == "[REDACTED]"
    assert out["n"] == 3


def test_json_line_fields() -> None:
    rec = record(
        "proxied %s",
        "/api",
        extra={
            "http.request.method": "GET",
            "http.response.status_code": 200,
            "duration_ms": 1.5,
            "request_id": "r-1",
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "span_id": "00f067aa0ba902b7",
            "ratio": float("nan"),
            "obj": object(),
        },
    )
    line = rendered(rec, JsonFormatter())
    assert "\n" not in line
    out = json.loads(line)
    assert out["body"] == "proxied /api"
    assert out["severity_text"] == "WARNING"
    assert out["logger"] == "bff.test"
    assert out["timestamp"].endswith("Z")
    assert "T" in out["timestamp"]
    assert out["http.request.method"] == "GET"
    assert out["http.response.status_code"] == 200
    assert out["duration_ms"] == 1.5
    assert out["request_id"] == "r-1"
    assert out["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert out["span_id"] == "00f067aa0ba902b7"
    assert out["ratio"] == "nan"
    assert isinstance(out["obj"], str)


def test_json_exception_fields() -> None:
    out = json.loads(rendered(record("failed", exc=True), JsonFormatter()))
    assert out["exception.type"] == "ValueError"
    assert out["exception.message"] == "IdP said refresh_token=[REDACTED]"
    assert "Traceback" in out["exception.stacktrace"]
    assert SECRET not in json.dumps(out)


def test_extras_cannot_overwrite_the_core_fields() -> None:
    out = json.loads(rendered(record("real", extra={"body": "fake", "severity_text": "DEBUG"}), JsonFormatter()))
    assert out["body"] == "real"
    assert out["severity_text"] == "WARNING"


def test_a_malformed_log_call_still_renders() -> None:
    out = json.loads(rendered(record("%d items", "not a number"), JsonFormatter()))
    assert out["body"] == "%d items"


# --- the invariant ---------------------------------------------------------------------------------------------------

B64TOKEN = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/", min_size=20, max_size=60
)
B64URL = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", min_size=8, max_size=40)
CONTEXTS = [
    "Authorization: Bearer {s}",
    "Authorization: Basic {s}",
    "access_token={s}",
    "refresh_token={s}&x=1",
    '{{"id_token": "{s}"}}',
    "{{'refresh_token': '{s}'}}",
    '{{\\"access_token\\":\\"{s}\\"}}',
    "code={s}",
    "code_verifier={s}",
    "client_secret={s}",
    "client_assertion={s}",
    "/bff/callback?state=abc&code={s}",
    "return_to=%2Fx%3Fcode%3D{s}",
    "Cookie: a=b; __Host-bff={s}",
    "Set-Cookie: __Host-bff={s}; Path=/",
    "(b'cookie', b'__Host-bff={s}')",
]


@st.composite
def secrets_in_context(draw: st.DrawFn) -> tuple[str, str]:
    if draw(st.booleans()):
        secret = draw(B64TOKEN)
        fragment = draw(st.sampled_from(CONTEXTS)).format(s=secret)
    else:
        secret = "eyJ" + draw(B64URL) + "." + draw(B64URL) + "." + draw(B64URL)
        fragment = secret
    prefix = draw(st.text(max_size=30))
    suffix = draw(st.text(max_size=30))
    assume(secret not in prefix + suffix)
    return secret, f"{prefix} {fragment} {suffix}"


@settings(max_examples=300, deadline=None)
@given(
    case=secrets_in_context(), where=st.sampled_from(["message", "argument", "extra", "nested"]), as_json=st.booleans()
)
def test_a_secret_never_survives_formatting(case: tuple[str, str], where: str, as_json: bool) -> None:
    secret, text = case
    if where == "message":
        rec = record(text)
    elif where == "argument":
        rec = record("value: %s", text)
    elif where == "extra":
        rec = record("x", extra={"url.path": text})
    elif where == "exception":
        rec = record("x")
        try:
            fail(text)
        except ValueError:
            rec.exc_info = sys.exc_info()
    else:
        rec = record("x", extra={"details": {"list": [1, text]}})
    out = rendered(rec, JsonFormatter() if as_json else TextFormatter())
    assert secret not in out
    if as_json:
        assert secret not in json.dumps(json.loads(out), ensure_ascii=False)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(max_size=20) | st.builds(object),
    lambda children: (
        st.lists(children, max_size=3)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=10) | st.integers(), children, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(message=st.text(), fields=st.dictionaries(st.text(min_size=1, max_size=20), JSONISH, max_size=4))
def test_any_record_renders_as_one_line_of_json(message: str, fields: dict[str, object]) -> None:
    extra = {k: v for k, v in fields.items() if k not in logging.makeLogRecord({}).__dict__ and k != "message"}
    line = rendered(record(message, extra=extra), JsonFormatter())
    assert "\n" not in line
    assert "\r" not in line
    out = json.loads(line)
    assert out["body"] == redact(message)
