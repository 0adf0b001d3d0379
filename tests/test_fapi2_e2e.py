"""The FAPI 2.0 profile end to end (``profile = "fapi2"``): it logs in against a reference IdP that supports it and
refuses, at start, one that does not, one line per missing capability (``bff check`` and ``bff serve`` too)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc.jwk import ECKey

from bff.app import BffApp
from bff.errors import ConfigError
from bff.session.memory_store import MemoryStore
from bff_devtools.devidp import ClientRegistration
from tests.support.browser import Browser
from tests.support.configs import base_document, make_config
from tests.support.devidp import running_devidp
from tests.support.par_world import (
    CLIENT_ID,
    SECRET,
    client_key,
    dpop_key,
    jwt_parts,
    logged_in,
    query,
    running_world,
)
from tests.support.servers import free_port


def fapi2_oidc(tmp_path: Path) -> dict[str, Any]:
    return {"profile": "fapi2", "dpop": True, "dpop_key_file": str(dpop_key(tmp_path))}


async def test_fapi2_logs_in_against_an_idp_that_supports_it(tmp_path: Path, browser: Browser) -> None:
    with running_world(tmp_path, oidc=fapi2_oidc(tmp_path), signed=True) as world:
        hops = await logged_in(browser, world)
        assert set(query(hops[0].headers["location"])) == {"client_id", "request_uri"}
        assert world.transport.paths() == ["/par", "/token"]
        assert world.transport.posts[1][1]["client_assertion_type"].endswith("jwt-bearer")
        # FAPI 2.0 SP 5.3.2.1: the issuer is the audience of every client assertion, PS256/ES256 only; the reference
        # IdP accepts it. RFC 9449 10: the pushed request names bff's DPoP key, which the code is then bound to.
        for _, form in world.transport.posts:
            header, claims = jwt_parts(form["client_assertion"])
            assert (header["alg"], claims["aud"]) == ("ES256", world.idp.url)
        assert (
            world.transport.posts[0][1]["dpop_jkt"]
            == ECKey.import_key((tmp_path / "dpop.pem").read_bytes()).thumbprint()
        )


@pytest.mark.parametrize(
    ("idp", "missing"),
    [
        ({"par": False}, ["no pushed_authorization_request_endpoint"]),
        ({"iss_parameter": False}, ["authorization_response_iss_parameter_supported"]),
        (
            {"par": False, "iss_parameter": False},
            ["no pushed_authorization_request_endpoint", "authorization_response_iss_parameter_supported"],
        ),
    ],
)
async def test_fapi2_refuses_an_idp_that_lacks_a_capability(
    tmp_path: Path, idp: dict[str, Any], missing: list[str]
) -> None:
    with running_world(tmp_path, idp=idp, oidc=fapi2_oidc(tmp_path), signed=True, start_bff=False) as world:
        app = BffApp(make_config(world.doc), store=MemoryStore())
        with pytest.raises(ConfigError) as caught:
            async with app.lifespan():
                pass
        assert not app.idp.ready
    assert len(caught.value.problems) == len(missing), caught.value.problems
    for problem, text in zip(caught.value.problems, missing, strict=True):
        assert text in problem


def test_fapi2_refuses_client_secrets_and_unbound_tokens_at_config_check() -> None:
    doc = base_document()
    doc["oidc"]["profile"] = "fapi2"
    with pytest.raises(ConfigError) as caught:
        make_config(doc)
    text = "\n".join(caught.value.problems)
    assert "oidc.token_endpoint_auth_method: client_secret_basic is refused by profile = 'fapi2'" in text
    assert "oidc.dpop: profile = 'fapi2' needs sender-constrained tokens" in text
    doc["oidc"].update(par="off", id_token_signing_algs=["RS256"])
    with pytest.raises(ConfigError) as caught:
        make_config(doc)
    text = "\n".join(caught.value.problems)
    assert "oidc.par: must not be 'off'" in text
    assert "oidc.id_token_signing_algs[0]: is refused by profile = 'fapi2'" in text


def write_fapi2_config(tmp_path: Path, issuer: str, key_file: Path) -> Path:
    """A ``bff serve`` config file: profile fapi2 with private_key_jwt and DPoP, for ``issuer``, on a free port."""
    port = free_port()
    config = tmp_path / "bff.toml"
    config.write_text(
        f"""
[server]
listen = "127.0.0.1:{port}"
public_origin = "http://127.0.0.1:{port}"
[session]
store = "memory://"
keys = ["{"k" * 40}"]
[oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
token_endpoint_auth_method = "private_key_jwt"
private_key_file = "{key_file}"
profile = "fapi2"
dpop = true
dpop_key_file = "{dpop_key(tmp_path)}"
timeout = "2s"
"""
    )
    return config


def test_bff_check_and_serve_refuse_a_fapi2_idp_without_par(tmp_path: Path) -> None:
    key_file, jwks = client_key(tmp_path)
    registration = ClientRegistration(
        CLIENT_ID,
        SECRET,
        redirect_uris=("http://127.0.0.1:1/bff/callback",),
        token_endpoint_auth_method="private_key_jwt",
        jwks=jwks,
    )
    with running_devidp(tmp_path, (registration,), par=False) as idp:
        config = write_fapi2_config(tmp_path, idp.url, key_file)
        for command in ("check", "serve"):
            done = subprocess.run(
                [sys.executable, "-m", "bff", command, "--config", str(config)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            output = done.stdout + done.stderr
            assert done.returncode == 2, output
            assert "no pushed_authorization_request_endpoint (PAR, RFC 9126), which profile = 'fapi2'" in output
            assert output.count("pushed_authorization_request_endpoint") == 1, "once, one line per missing capability"
            assert "Traceback" not in output


def test_bff_check_only_warns_when_the_idp_cannot_be_reached(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``bff serve`` waits for an IdP that is down; ``bff check`` says the metadata was not checked and passes."""
    from bff.cli import main

    key_file, _ = client_key(tmp_path)
    config = write_fapi2_config(tmp_path, f"http://127.0.0.1:{free_port()}", key_file)
    assert main(["check", "--config", str(config)]) == 0
    captured = capsys.readouterr()
    assert "warning: the identity provider's metadata was not checked" in captured.err
    assert ": OK" in captured.out


async def test_an_idp_that_comes_up_without_par_leaves_a_fapi2_bff_not_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The IdP is down when bff starts (bff starts and retries); when it answers, its metadata lacks PAR: bff logs
    the refusal and stays not ready (503 not_ready) instead of serving logins the profile forbids."""
    from bff.errors import IdPUnavailable
    from bff.oidc.discovery import fetch_metadata as real

    calls: list[str] = []

    async def down_once(http: httpx.AsyncClient, issuer: str) -> Any:
        calls.append(issuer)
        if len(calls) == 1:
            raise IdPUnavailable("OpenID Provider metadata: cannot fetch (ConnectError)")
        return await real(http, issuer)

    monkeypatch.setattr("bff.oidc.provider.fetch_metadata", down_once)
    with running_world(tmp_path, idp={"par": False}, oidc=fapi2_oidc(tmp_path), signed=True, start_bff=False) as world:
        app = BffApp(make_config(world.doc), store=MemoryStore())
        async with app.lifespan():
            retry = app._retry
            assert retry is not None, "the first failure is retried in the background"
            await asyncio.wait_for(retry, 10)
            assert len(calls) == 2
            assert not app.idp.ready
    assert "no pushed_authorization_request_endpoint" in caplog.text
