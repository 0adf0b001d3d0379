"""The WebSocket keys of a route: defaults, the values read, and a specific problem for every bad value."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bff.config import parse_config
from bff.errors import ConfigError
from tests.support.configs import base_document


def route(**keys: Any) -> dict[str, Any]:
    doc = base_document()
    doc["routes"] = [{"path": "/api/live", "upstream": "https://live.example.net", **keys}]
    return doc


def problems(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(copy.deepcopy(doc), env={})
    return info.value.problems


def test_a_route_relays_no_websocket_unless_it_says_so() -> None:
    settings = parse_config(route(), env={}).routes[0]
    assert (settings.websocket, settings.max_message, settings.idle_timeout, settings.session_check) == (
        False,
        1024 * 1024,
        300.0,
        0.5,
    )


def test_the_websocket_keys_are_read() -> None:
    doc = route(websocket=True, max_message="64KiB", idle_timeout="30s", session_check="250ms")
    settings = parse_config(doc, env={}).routes[0]
    assert (settings.websocket, settings.max_message, settings.idle_timeout, settings.session_check) == (
        True,
        64 * 1024,
        30.0,
        0.25,
    )


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"max_message": "1KiB"}, "routes[0].max_message: applies only to a route with websocket = true"),
        ({"idle_timeout": "1m"}, "routes[0].idle_timeout: applies only to a route with websocket = true"),
        ({"session_check": "1s"}, "routes[0].session_check: applies only to a route with websocket = true"),
        ({"websocket": "yes"}, "routes[0].websocket: expected bool, got str"),
        ({"websocket": True, "max_message": 0}, "routes[0].max_message: must be between 1 byte and 64MiB"),
        ({"websocket": True, "max_message": "65MiB"}, "routes[0].max_message: must be between 1 byte and 64MiB"),
        ({"websocket": True, "max_message": "big"}, "routes[0].max_message: expected a size like 64KiB"),
        ({"websocket": True, "idle_timeout": 0}, "routes[0].idle_timeout: must be longer than 0s"),
        ({"websocket": True, "idle_timeout": "soon"}, "routes[0].idle_timeout: expected a duration"),
        ({"websocket": True, "session_check": "10ms"}, "routes[0].session_check: must be between 100ms and 60s"),
        ({"websocket": True, "session_check": "2m"}, "routes[0].session_check: must be between 100ms and 60s"),
        ({"websocket": True, "proxy": "http://egress:3128"}, "routes[0].proxy: a websocket route connects directly"),
    ],
)
def test_every_bad_websocket_value_is_a_specific_problem(keys: dict[str, Any], expected: str) -> None:
    found = problems(route(**keys))
    assert any(p.startswith(expected) for p in found), found


def test_a_websocket_route_is_refused_where_its_token_would_be_dpop_bound(tmp_path: Path) -> None:
    key = tmp_path / "dpop.pem"
    key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    doc = route(websocket=True)
    doc["oidc"]["dpop"] = True
    doc["oidc"]["dpop_key_file"] = str(key)
    assert any(p.startswith("routes[0].websocket: not supported on a DPoP route yet") for p in problems(doc))
    doc["routes"][0]["dpop"] = False  # this route sends bearer tokens: fine
    assert parse_config(copy.deepcopy(doc), env={}).routes[0].websocket is True
