"""Store formats across releases (docs/storage-formats.md): what the previous release wrote is read, what this
release writes with ``write_format = 1`` is what the previous release reads, format 2 round-trips and is pinned, and
a format this release does not know is refused with its own error, never deleted.

The fixtures in ``fixtures/`` were written by ``fixtures/make_fixtures.py``: ``format1.json`` by the previous
release's own code (``tests.support.previous_release.PREVIOUS_RELEASE``), ``format2.json`` by this one.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import logging
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bff.config import Secret, SessionSettings
from bff.errors import SessionFormatUnsupported
from bff.models import Session, TokenSet
from bff.session import record
from bff.session.manager import SessionManager
from bff.session.memory_store import MemoryStore
from bff.session.record import UnsupportedFormat, decode_session, decode_tokens, encode_session, encode_tokens
from tests.support.clock import FakeClock
from tests.support.previous_release import previous_release_file
from tests.support.realistic_tokens import realistic_tokens

FIXTURES = Path(__file__).parent / "fixtures"
#: Format 2 is its framing AND this dictionary: changing the dictionary would be a new format.
FORMAT_2_DICTIONARY_SHA256 = "2bf21ab960f076ba712c503a2ebb1e7fd3e2388f124f4ae95a25dbdc3807b1fb"


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def manager_for(data: dict[str, Any], store: MemoryStore, write_format: int = 1) -> SessionManager:
    settings = SessionSettings(keys=tuple(Secret(k) for k in data["keys"]), write_format=write_format)
    return SessionManager(store, settings, clock=FakeClock(1_800_000_100.0))


@pytest.fixture(scope="module")
def previous_record(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """The previous release's ``bff/session/record.py``, loaded as a module of its own."""
    path = tmp_path_factory.mktemp("previous") / "previous_release_record.py"
    path.write_text(previous_release_file("bff/session/record.py"))
    spec = importlib.util.spec_from_file_location("previous_release_record", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def realistic_session() -> Session:
    sub = "5b0e9c55-2a7e-4c1e-8d37-5a4bd0a1f001"
    now = 1_800_000_000
    return Session(
        sub=sub,
        sid="idp-sid",
        tokens=realistic_tokens(sub, "idp-sid", now),
        created_at=now + 0.5,
        expires_at=now + 43200.5,
        last_seen=now + 0.5,
        claims={"sub": sub, "name": "Alice Example", "email": "alice@example.com"},
        route_tokens={"https://api.example.com|": TokenSet(access_token="opaque-route-token")},
    )


# --- what the previous release wrote --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["format1.json", "format2.json"])
async def test_fixture_records_load_through_the_manager(name: str) -> None:
    data = fixture(name)
    store = MemoryStore()
    sessions = manager_for(data, store)
    assert len(data["records"]) == 3
    for entry in data["records"]:
        await store.set(entry["store_key"], unb64(entry["encrypted"]), 3600)
        loaded = await sessions.load(entry["session_id"], slide=False)
        assert loaded is not None, entry["name"]
        assert loaded.session == Session.from_json(entry["session"]), entry["name"]


@pytest.mark.parametrize(("name", "formats"), [("format1.json", [1, 1, 0]), ("format2.json", [2, 2, 0])])
async def test_fixture_records_are_in_the_format_they_claim(name: str, formats: list[int]) -> None:
    data = fixture(name)
    sessions = manager_for(data, MemoryStore())
    plaintexts = [sessions._sessions.decrypt(unb64(e["encrypted"]), e["store_key"].encode()) for e in data["records"]]
    assert [record.stored_format(p) for p in plaintexts] == formats


@pytest.mark.parametrize("name", ["format1.json", "format2.json"])
async def test_fixture_refresh_results_load(name: str) -> None:
    data = fixture(name)
    store = MemoryStore()
    sessions = manager_for(data, store)
    for entry in data["refresh_results"]:
        await store.set(entry["store_key"], unb64(entry["encrypted"]), 3600)
        assert await sessions.load_refresh_result(entry["spent_refresh_token"]) == TokenSet.from_json(entry["tokens"])


# --- what this release writes ---------------------------------------------------------------------------------------


def test_write_format_1_is_byte_for_byte_what_the_previous_release_writes(previous_record: ModuleType) -> None:
    session = realistic_session()
    assert encode_session(session, 1) == previous_record.encode_session(session)
    assert previous_record.decode_session(encode_session(session, 1)) == session


async def test_write_format_1_records_and_results_decrypt_with_the_previous_release_code(
    previous_record: ModuleType,
) -> None:
    """Encrypted as this release stores them with the default ``write_format``, read as the previous release
    reads them: its record decoder, and its refresh-result parsing (plain JSON of the token set)."""
    data = fixture("format1.json")
    store = MemoryStore()
    sessions = manager_for(data, store)
    assert sessions.settings.write_format == SessionSettings(keys=(Secret("x" * 32),)).write_format == 1
    session = realistic_session()
    key = sessions.key_for("some-session-id")
    plaintext = sessions._sessions.decrypt(sessions._encrypt(key, session), key.encode())
    assert previous_record.decode_session(plaintext) == session
    await sessions.save_refresh_result("spent", session.tokens, 60)
    blob = await store.get(sessions._result_key("spent"))
    assert blob is not None
    result_key = sessions._result_key("spent").encode()
    assert TokenSet.from_json(json.loads(sessions._sessions.decrypt(blob, result_key))) == session.tokens


def test_the_previous_release_cannot_read_format_2(previous_record: ModuleType) -> None:
    """Why the default stays 1 until every instance runs this release: the old decoder calls it malformed."""
    with pytest.raises(ValueError, match=r"decode|Expecting value"):  # json.loads of a DEFLATE stream
        previous_record.decode_session(encode_session(realistic_session(), 2))


def test_format_2_round_trips_and_is_smaller() -> None:
    session = realistic_session()
    one, two = encode_session(session, 1), encode_session(session, 2)
    assert two[:1] == b"\x02"
    assert one[:1] == b"\x01"
    assert decode_session(two) == session == decode_session(one)
    assert len(two) < len(one) - 100  # the point of format 2: Redis memory per session
    assert decode_tokens(encode_tokens(session.tokens, 2)) == session.tokens
    assert decode_tokens(encode_tokens(session.tokens, 1)) == session.tokens


def test_format_2_dictionary_is_pinned() -> None:
    assert hashlib.sha256(record.FORMAT_2_DICTIONARY).hexdigest() == FORMAT_2_DICTIONARY_SHA256


def test_a_format_this_release_does_not_write_is_refused() -> None:
    with pytest.raises(ValueError, match="not 3"):
        encode_session(realistic_session(), 3)


@pytest.mark.parametrize(
    "plaintext",
    [
        b"\x02" + encode_session(realistic_session(), 2)[1:-3],  # truncated
        encode_session(realistic_session(), 2) + b"\x00",  # trailing bytes
        b"\x02not deflate",
        b"",
    ],
    ids=["truncated", "trailing", "garbage", "empty"],
)
def test_a_damaged_format_2_record_is_malformed_not_unsupported(plaintext: bytes) -> None:
    with pytest.raises(ValueError, match=r"inflate|truncated|empty") as caught:
        decode_session(plaintext)
    assert not isinstance(caught.value, UnsupportedFormat)


# --- a format from a newer release ----------------------------------------------------------------------------------


@pytest.mark.parametrize("first_byte", [3, 0, 0x7A, 0xFF])
async def test_an_unknown_format_is_its_own_error_and_the_record_is_kept(
    first_byte: int, caplog: pytest.LogCaptureFixture
) -> None:
    data = fixture("format1.json")
    store = MemoryStore()
    sessions = manager_for(data, store)
    key = sessions.key_for("newer")
    blob = sessions._sessions.encrypt(bytes([first_byte]) + b"whatever a newer release writes", key.encode())
    await store.set(key, blob, 3600)
    with caplog.at_level(logging.WARNING, logger="bff.session"), pytest.raises(SessionFormatUnsupported) as caught:
        await sessions.load("newer")
    assert caught.value.status == 401
    assert caught.value.error == "session_format_unsupported"
    assert f"store format {first_byte}," in caplog.text
    assert await sessions.load("newer", strict=False) is None  # callback and logout: as if there were none
    assert await store.get(key) == blob  # kept for the instances that read it
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bff.session"), pytest.raises(SessionFormatUnsupported):
        await sessions.load("newer")
    assert "store format" not in caplog.text  # once per record, not once per request


async def test_an_unknown_refresh_result_format_is_never_a_cache_miss() -> None:
    """A miss would spend the refresh token again; an IdP with reuse detection then revokes the family."""
    data = fixture("format1.json")
    store = MemoryStore()
    sessions = manager_for(data, store)
    key = sessions._result_key("spent")
    await store.set(key, sessions._sessions.encrypt(b"\x03newer", key.encode()), 60)
    with pytest.raises(SessionFormatUnsupported):
        await sessions.load_refresh_result("spent")


@pytest.mark.parametrize("plaintext", [b"\x02https://idp.example.com/logout", b"\x00", b""])
async def test_a_logout_continuation_in_an_unknown_format_is_not_followed(
    plaintext: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Format 1 is the URL itself: anything starting with a control byte is a later format, never a Location."""
    store = MemoryStore()
    sessions = manager_for(fixture("format1.json"), store)
    handle = await sessions.logouts.save_redirect("https://idp.example.com/logout", 60)
    assert await sessions.logouts.take_redirect(handle) == "https://idp.example.com/logout"
    key = sessions.logouts._redirect_key(handle)
    await store.set(key, sessions.logouts._redirects.encrypt(plaintext, key.encode()), 60)
    with caplog.at_level(logging.WARNING, logger="bff.session"):
        assert await sessions.logouts.take_redirect(handle) is None
    assert "logout continuation" in caplog.text
