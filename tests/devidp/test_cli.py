"""``bff devidp``: flags to settings, the client secret's sources, the banner and ``--help``."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bff.errors import ConfigError
from bff_devtools.devidp.cli import add_devidp_parser, banner, build_settings
from bff_devtools.devidp.pages import BANNER


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bff")
    add_devidp_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["devidp", *argv])


def test_defaults() -> None:
    settings, generated = build_settings(parse(), environ={})
    assert settings.issuer == "http://localhost:9000"
    assert settings.data_dir == Path(".bff-data/devidp")
    assert settings.store_url == "memory://"
    assert settings.alg == "ES256"
    assert settings.access_token_ttl == 900
    assert settings.audience == "demo-api"
    [client] = settings.clients
    assert client.client_id == "spa-bff"
    assert client.redirect_uris == ("http://localhost:8000/bff/callback",)
    assert client.post_logout_redirect_uris == ("http://localhost:8000/",)
    assert client.backchannel_logout_uri == "http://localhost:8000/bff/backchannel-logout"
    assert "urn:ietf:params:oauth:grant-type:token-exchange" in client.grant_types
    assert client.exchange_audiences == ("demo-reports",)
    assert generated
    assert len(client.client_secret or "") >= 43


def test_flags() -> None:
    args = parse(
        "--port", "9100", "--alg", "RS256", "--access-token-ttl", "30s", "--client-id", "web",
        "--redirect-uri", "http://localhost:3000/bff/callback", "--redirect-uri", "http://127.0.0.1:3000/bff/callback",
        "--backchannel-logout-uri", "", "--audience", "orders", "--store", "redis://localhost:6379/0",
        "--exchange-audience", "billing", "--exchange-audience", "https://reports.example.net",
    )  # fmt: skip
    settings, _ = build_settings(args, environ={"BFF_CLIENT_SECRET": "from-the-environment-123"})
    assert settings.issuer == "http://localhost:9100"
    assert (settings.alg, settings.access_token_ttl, settings.audience) == ("RS256", 30, "orders")
    [client] = settings.clients
    assert client.client_id == "web"
    assert client.client_secret == "from-the-environment-123"
    assert len(client.redirect_uris) == 2
    assert client.backchannel_logout_uri is None
    assert client.exchange_audiences == ("billing", "https://reports.example.net")
    assert settings.store_url == "redis://localhost:6379/0"


def test_the_secret_flag_wins_over_the_environment() -> None:
    settings, generated = build_settings(parse("--client-secret", "from-the-flag-0123456"), environ={})
    assert settings.clients[0].client_secret == "from-the-flag-0123456"
    assert not generated


def test_bad_flags_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="issuer"):
        build_settings(parse("--issuer", "ftp://idp"), environ={})
    with pytest.raises(SystemExit):
        parse("--access-token-ttl", "soon")


def test_banner_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    settings, _ = build_settings(parse("--client-secret", "shown-only-if-generated"), environ={})
    text = banner(settings, show_secret=False)
    assert text.startswith("bff devidp \u2014 DEVELOPMENT identity provider, not for production\n")
    assert "alice / wonderland (admin)" in text
    assert "http://localhost:9000/admin" in text
    assert "shown-only-if-generated" not in text
    assert "shown-only-if-generated" in banner(settings, show_secret=True)
    with pytest.raises(SystemExit):
        parse("--help")
    assert "DEVELOPMENT identity provider, not for production" in capsys.readouterr().out
    assert BANNER.startswith("bff devidp")


def test_refresh_reuse_grace() -> None:
    assert build_settings(parse(), environ={})[0].refresh_reuse_grace == 0  # off: reuse detection stays strict
    settings, _ = build_settings(parse("--refresh-reuse-grace", "30s"), environ={})
    assert settings.refresh_reuse_grace == 30
    with pytest.raises(ConfigError, match="refresh_reuse_grace: must be between 0 and 5m"):
        build_settings(parse("--refresh-reuse-grace", "6m"), environ={})
    assert "refresh:       tokens rotated; a replaced one is accepted again for 30s" in banner(
        settings, show_secret=False
    )
    strict, _ = build_settings(parse(), environ={})
    assert "refresh:       tokens rotated; reuse revokes the family" in banner(strict, show_secret=False)


def test_dpop_nonce_is_off_unless_asked_for() -> None:
    assert build_settings(parse(), environ={})[0].dpop_nonce is False
    assert build_settings(parse("--dpop-nonce"), environ={})[0].dpop_nonce is True


def test_require_dpop_is_off_unless_asked_for() -> None:
    assert build_settings(parse(), environ={})[0].require_dpop is False
    assert build_settings(parse("--require-dpop"), environ={})[0].require_dpop is True


def test_mutual_tls_flags() -> None:
    """``--ssl-*`` serve https asking for optional client certificates (shown to the app through the ASGI TLS
    extension); ``--tls-client-auth-subject-dn`` registers the client for tls_client_auth and bound tokens."""
    from bff_devtools.devidp.cli import tls_settings
    from bff_devtools.devidp.mtls import TLSScopeProtocol

    args = parse(
        "--ssl-certfile", "idp.crt", "--ssl-keyfile", "idp.key", "--ssl-ca-certs", "clients-ca.crt",
        "--tls-client-auth-subject-dn", "CN=bff",
    )  # fmt: skip
    settings, _ = build_settings(args, environ={})
    assert settings.issuer == "https://localhost:9000"
    [client] = settings.clients
    assert (client.token_endpoint_auth_method, client.tls_client_auth_subject_dn) == ("tls_client_auth", "CN=bff")
    assert client.tls_client_certificate_bound_access_tokens
    served = tls_settings(args)
    assert (served["ssl_certfile"], served["ssl_keyfile"], served["ssl_ca_certs"]) == (
        "idp.crt",
        "idp.key",
        "clients-ca.crt",
    )
    assert served["http"].func is TLSScopeProtocol
    assert tls_settings(parse()) == {}
