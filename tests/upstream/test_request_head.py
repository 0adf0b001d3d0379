"""The request head the data-plane client writes: whatever the values, each stays on its own line (RFC 9112 2.2,
RFC 9110 5.5). A property test over values of any Latin-1 characters: the head is refused exactly when a value, the
target or the authority holds CR, LF or NUL, and otherwise is the lines asked for, byte for byte."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bff.upstream.request_head import request_head

_LATIN1 = st.characters(max_codepoint=0xFF)
_WITH_BREAKS = st.text(_LATIN1 | st.sampled_from("\r\n\x00"), max_size=40)
_STRAY = ("\r", "\n", "\x00")


def _stray(text: str) -> bool:
    return any(c in text for c in _STRAY)


@given(values=st.lists(_WITH_BREAKS, max_size=6), body=st.sampled_from([None, b"", b"abc"]))
def test_a_head_is_refused_exactly_when_a_value_would_leave_its_line(values: list[str], body: bytes | None) -> None:
    headers = [(f"X-H{i}", value) for i, value in enumerate(values)]
    if any(_stray(value) for value in values):
        with pytest.raises(ValueError, match="CR, LF or NUL"):
            request_head("POST", "/p?q=1", "api.example.net", headers, body)
        return
    head, length = request_head("POST", "/p?q=1", "api.example.net", headers, body)
    assert length is None
    expected = ["POST /p?q=1 HTTP/1.1", "host: api.example.net", *(f"x-h{i}: {v}" for i, v in enumerate(values))]
    expected.append(f"content-length: {len(body) if body is not None else 0}")
    assert head == ("\r\n".join(expected) + "\r\n\r\n").encode("latin-1")


@given(before=st.text(_LATIN1, max_size=20), stray=st.sampled_from(_STRAY), after=_WITH_BREAKS)
def test_an_authority_that_would_leave_its_line_is_refused(before: str, stray: str, after: str) -> None:
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        request_head("GET", "/", before + stray + after, [], None)


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\rb", "a\nb", "a\x00b", "\r\n", "ok\r"])
def test_each_stray_line_end_or_nul_in_a_bearer_token_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        request_head("GET", "/", "api.example.net", [("authorization", "Bearer " + value)], None)
