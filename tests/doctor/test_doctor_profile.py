"""``bff doctor``'s ``idp.par`` and ``idp.fapi2`` against the reference IdP: the same judgement as ``bff serve``'s
start (``bff.oidc.profiles.plan_authorization``), so an IdP doctor passes is one bff starts with, and every line
bff would refuse to start with is in doctor's FAIL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from bff.config import Config
from bff.doctor import Check, run_doctor
from bff.errors import ConfigError
from bff.oidc.client_auth import ClientAuth
from bff.oidc.discovery import fetch_metadata
from bff.oidc.profiles import plan_authorization
from bff_devtools.devidp import ClientRegistration
from tests.support.configs import base_document, make_config
from tests.support.devidp import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, running_devidp
from tests.support.par_world import client_key, dpop_key


def config_for(issuer: str, tmp_path: Path, **oidc: Any) -> Config:
    doc = base_document(public_origin="http://localhost:8000", issuer=issuer)
    doc["routes"] = []
    doc["oidc"].update(oidc)
    return make_config(doc)


def fapi2(tmp_path: Path, key_file: Path) -> dict[str, Any]:
    return {
        "token_endpoint_auth_method": "private_key_jwt",
        "private_key_file": str(key_file),
        "profile": "fapi2",
        "dpop": True,
        "dpop_key_file": str(dpop_key(tmp_path)),
    }


async def start_refusal(config: Config) -> list[str]:
    """The lines ``bff serve`` refuses to start with (none: it starts)."""
    async with httpx.AsyncClient() as http:
        metadata = await fetch_metadata(http, config.oidc.issuer)
        try:
            plan_authorization(config.oidc, metadata, ClientAuth(config.oidc, metadata, http, clock=lambda: 0.0))
        except ConfigError as exc:
            return [problem.removeprefix("oidc: ") for problem in exc.problems]
    return []


def profile_checks(checks: list[Check]) -> dict[str, Check]:
    return {c.id: c for c in checks if c.id in ("idp.par", "idp.fapi2")}


@pytest.mark.parametrize(
    ("idp", "failing"),
    [
        ({}, {}),
        ({"par": False}, {"idp.par": 1}),
        ({"iss_parameter": False}, {"idp.fapi2": 1}),
        ({"par": False, "iss_parameter": False}, {"idp.par": 1, "idp.fapi2": 1}),
    ],
    ids=["capable", "no-par", "no-iss", "neither"],
)
async def test_doctor_and_start_agree_on_fapi2(tmp_path: Path, idp: dict[str, Any], failing: dict[str, int]) -> None:
    key_file, jwks = client_key(tmp_path)
    registration = ClientRegistration(
        CLIENT_ID, CLIENT_SECRET, redirect_uris=(REDIRECT_URI,), token_endpoint_auth_method="private_key_jwt", jwks=jwks
    )
    with running_devidp(tmp_path, (registration,), **idp) as server:
        config = config_for(server.url, tmp_path, **fapi2(tmp_path, key_file))
        checks = profile_checks(await run_doctor(config))
        refusal = await start_refusal(config)
    assert {i: c.status for i, c in checks.items() if c.status != "PASS"} == dict.fromkeys(failing, "FAIL"), checks
    assert len(refusal) == sum(failing.values()), refusal
    for problem in refusal:
        assert any(problem in check.message for check in checks.values()), (problem, checks)
    if not failing:
        assert "pushed to" in checks["idp.par"].message


async def test_par_required_without_par_fails_and_fapi2_is_skipped(tmp_path: Path) -> None:
    with running_devidp(tmp_path, par=False) as server:
        checks = profile_checks(await run_doctor(config_for(server.url, tmp_path, par="required")))
    assert (checks["idp.par"].status, checks["idp.fapi2"].status) == ("FAIL", "SKIP")
    assert "no pushed_authorization_request_endpoint" in checks["idp.par"].message
    assert "par ('required')" in checks["idp.par"].fix
