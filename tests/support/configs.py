"""Config documents for tests: a valid base that each test modifies."""

from __future__ import annotations

import copy
from typing import Any

from bff.config import Config, parse_config

SESSION_KEY = "k" * 16 + "0123456789abcdef-test-session-key"
CLIENT_SECRET = "test-client-secret-0123456789-abcdefghij"


def base_document(
    *, public_origin: str = "https://app.example.com", issuer: str = "https://idp.example.com", store: str = "memory://"
) -> dict[str, Any]:
    return {
        "server": {"listen": "127.0.0.1:8000", "public_origin": public_origin},
        "session": {"store": store, "keys": [SESSION_KEY]},
        "oidc": {"issuer": issuer, "client_id": "spa-bff", "client_secret": CLIENT_SECRET},
        "routes": [{"path": "/api/orders", "upstream": "https://orders.example.net/v1", "token": "user"}],
    }


def make_config(doc: dict[str, Any] | None = None, **kwargs: Any) -> Config:
    return parse_config(copy.deepcopy(doc) if doc is not None else base_document(**kwargs), env={})
