"""``client_cert``/``client_key``/``client_key_password`` in ``[oidc]`` and in routes, ``certificate_bound`` and the
``tls_client_auth`` methods (RFC 8705): every bad value is a problem naming its key, found by ``bff check``."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from bff.cli import main
from bff.client_tls import check_client_certificates
from bff.config import explain_config, parse_config
from bff.errors import ConfigError
from tests.support.configs import base_document
from tests.support.pki import Issued, TestPKI

PASSPHRASE = "open sesame, 0123456789"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return TestPKI(tmp_path_factory.mktemp("pki"))


def with_certs(*, oidc: Issued | None = None, route: Issued | None = None, **extra: Any) -> dict[str, Any]:
    doc = copy.deepcopy(base_document())
    if oidc is not None:
        doc["oidc"].update(client_cert=str(oidc.cert), client_key=str(oidc.key))
    if route is not None:
        doc["routes"][0].update(client_cert=str(route.cert), client_key=str(route.key))
    for key, value in extra.items():
        section, _, name = key.partition("__")
        (doc["routes"][0] if section == "route" else doc[section])[name] = value
    return doc


def problems_of(doc: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    """Both stages: the file's own checks, then the certificates' (as ``bff check`` runs them)."""
    try:
        check_client_certificates(parse_config(doc, env=env or {}))
    except ConfigError as exc:
        return exc.problems
    return []


def test_a_good_certificate_and_key_pass_and_are_read(pki: TestPKI) -> None:
    alice = pki.client("cfg-alice")
    doc = with_certs(route=alice)
    config = parse_config(doc, env={})
    assert (config.routes[0].client_cert, config.routes[0].client_key) == (str(alice.cert), str(alice.key))
    assert problems_of(doc) == []


def test_the_passphrase_comes_from_the_environment_and_never_shows(pki: TestPKI) -> None:
    locked = pki.client("cfg-locked", password=PASSPHRASE)
    doc = with_certs(route=locked, route__client_key_password="${ORDERS_KEY_PASSWORD}")
    config = parse_config(doc, env={"ORDERS_KEY_PASSWORD": PASSPHRASE})
    assert PASSPHRASE not in repr(config)
    assert problems_of(doc, {"ORDERS_KEY_PASSWORD": PASSPHRASE}) == []
    assert problems_of(doc) == ["routes[0].client_key_password: environment variable ${ORDERS_KEY_PASSWORD} is not set"]


def test_a_wrong_or_missing_passphrase_is_named(pki: TestPKI) -> None:
    locked = pki.client("cfg-locked2", password=PASSPHRASE)
    wrong = problems_of(with_certs(route=locked, route__client_key_password="not it"))
    assert wrong == ["routes[0].client_key: is not a PEM private key, or client_key_password is wrong"]
    assert "not it" not in repr(wrong)
    missing = problems_of(with_certs(route=locked))
    assert missing == ["routes[0].client_key: is encrypted: set client_key_password"]


def test_a_key_of_another_certificate_is_refused(pki: TestPKI) -> None:
    alice, bob = pki.client("cfg-a"), pki.client("cfg-b")
    doc = with_certs(route=alice, route__client_key=str(bob.key))
    assert problems_of(doc) == ["routes[0].client_key: is not the private key of client_cert"]


def test_an_expired_certificate_is_refused(pki: TestPKI) -> None:
    old = pki.client("cfg-old", expired=True)
    (problem,) = problems_of(with_certs(oidc=old))
    assert problem.startswith("oidc.client_cert: expired on ")


def test_unreadable_or_foreign_files_are_named(pki: TestPKI, tmp_path: Path) -> None:
    alice = pki.client("cfg-c")
    garbage = tmp_path / "not-a-cert.pem"
    garbage.write_text("hello")
    assert problems_of(with_certs(route=alice, route__client_cert=str(tmp_path / "nope.pem"))) == [
        "routes[0].client_cert: file not found"
    ]
    assert problems_of(with_certs(route=alice, route__client_cert=str(garbage))) == [
        "routes[0].client_cert: is not a PEM certificate"
    ]
    assert problems_of(with_certs(route=alice, route__client_key=str(garbage))) == [
        "routes[0].client_key: is not a PEM private key, or client_key_password is wrong"
    ]


def test_a_certificate_needs_its_key_and_the_reverse(pki: TestPKI) -> None:
    alice = pki.client("cfg-d")
    doc = with_certs(route=alice)
    del doc["routes"][0]["client_key"]
    assert problems_of(doc) == [
        "routes[0].client_key: is required with client_cert (the PEM private key of that certificate)"
    ]
    doc = with_certs(oidc=alice)
    del doc["oidc"]["client_cert"]
    assert problems_of(doc) == ["oidc.client_cert: is required with client_key (the PEM certificate of that key)"]


def test_tls_client_auth_needs_a_client_certificate(pki: TestPKI) -> None:
    for method in ("tls_client_auth", "self_signed_tls_client_auth"):
        assert problems_of(with_certs(oidc__token_endpoint_auth_method=method)) == [
            f"oidc.client_cert: is required for {method} (RFC 8705 2: the client authenticates with it)"
        ]
        assert problems_of(with_certs(oidc=pki.client(f"cfg-{method}"), oidc__token_endpoint_auth_method=method)) == []


def test_a_certificate_bound_route_presents_the_idp_client_certificate(pki: TestPKI) -> None:
    idp, other = pki.client("cfg-idp"), pki.client("cfg-other")
    assert problems_of(with_certs(oidc=idp, route=idp, route__certificate_bound=True)) == []
    (problem,) = problems_of(with_certs(oidc=idp, route=other, route__certificate_bound=True))
    assert problem.startswith(
        "routes[0].client_cert: certificate_bound needs the same certificate as [oidc] client_cert"
    )
    assert problems_of(with_certs(route=idp, route__certificate_bound=True)) == [
        "routes[0].certificate_bound: needs [oidc] client_cert and client_key: the IdP binds the token to that"
        " certificate (RFC 8705 3)"
    ]
    assert problems_of(with_certs(oidc=idp, route__certificate_bound=True)) == [
        "routes[0].certificate_bound: needs client_cert and client_key: the same certificate as [oidc] client_cert"
        " (RFC 8705 3)"
    ]


def tls_client_auth_file(tmp_path: Path, issued: Issued, oidc_extra: str = "") -> Path:
    """A bff.toml whose client authenticates to the IdP with ``issued`` (``tls_client_auth``, RFC 8705 2)."""
    path = tmp_path / "bff.toml"
    path.write_text(f"""
[server]
public_origin = "https://app.example.com"
[session]
keys = ["{"k" * 40}"]
[oidc]
issuer = "https://idp.example.com"
client_id = "spa-bff"
token_endpoint_auth_method = "tls_client_auth"
client_cert = "{issued.cert}"
client_key = "{issued.key}"
{oidc_extra}
""")
    return path


def test_bff_check_reports_certificate_problems(
    pki: TestPKI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = pki.client("cfg-check-old", expired=True)
    path = tls_client_auth_file(tmp_path, old)
    assert main(["check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "oidc.client_cert: expired on " in err
    assert str(old.cert) not in err  # a path may come from the environment


def test_bff_check_explain_masks_the_passphrase(pki: TestPKI, tmp_path: Path) -> None:
    locked = pki.client("cfg-explain", password=PASSPHRASE)
    path = tls_client_auth_file(tmp_path, locked, 'client_key_password = "${KEY_PASSWORD}"')
    lines = explain_config(path, env={"KEY_PASSWORD": PASSPHRASE})
    assert any("client_key_password" in line for line in lines)
    assert not any(PASSPHRASE in line for line in lines)


def test_certificate_bound_needs_an_https_upstream_and_a_token(pki: TestPKI) -> None:
    idp = pki.client("cfg-https")
    doc = with_certs(oidc=idp, route=idp, route__certificate_bound=True, route__upstream="http://127.0.0.1:9")
    doc["routes"][0]["token"] = "none"
    assert problems_of(doc) == [
        "routes[0].client_cert: needs an https upstream: a client certificate is presented only over TLS",
        "routes[0].certificate_bound: needs a route that sends a token (token = 'none' sends none)",
        "routes[0].certificate_bound: needs an https upstream: the token is bound to the TLS client certificate",
    ]


def test_a_client_certificate_for_a_plain_http_upstream_is_refused(pki: TestPKI) -> None:
    alice = pki.client("cfg-http")
    assert problems_of(with_certs(route=alice, route__upstream="http://127.0.0.1:9")) == [
        "routes[0].client_cert: needs an https upstream: a client certificate is presented only over TLS"
    ]
