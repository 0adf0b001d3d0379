"""deploy/ agrees with the code: every command and flag in compose.yaml and the Kubernetes manifest exists in bff's
CLI, the ports line up, the mounted config passes ``bff check`` with the environment and mounts it is given, and the
Dockerfile's entrypoint and health check name real commands and endpoints. (Docker itself is not needed.)"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from bff.app import CONTROL_PATHS
from bff.cli import build_parser, main
from bff.config import Config, load_config

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
TEST_SECRET = "deploy-test-secret-0123456789-abcdefghijklmnop"
_INTERPOLATION = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::?[?-][^}]*)?\}")


def _interpolate(value: str) -> str:
    """Compose's ``${VAR:?message}`` with a test value for every variable (the secrets of deploy/.env)."""
    return _INTERPOLATION.sub(TEST_SECRET, value)


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def _dockerfile(name: str = "Dockerfile") -> dict[str, list[str]]:
    """Instruction -> its arguments, one entry per occurrence (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / name).read_text())
    instructions: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            instructions.setdefault(keyword.upper(), []).append(rest.strip())
    return instructions


def _argv(service: dict[str, Any]) -> list[str]:
    """The command line a bff-image service runs: its entrypoint (else the Dockerfile's) plus its command."""
    docker = _dockerfile()
    entrypoint = service.get("entrypoint") or json.loads(docker["ENTRYPOINT"][-1])
    command = service.get("command") or json.loads(docker["CMD"][-1])
    return [_interpolate(str(part)) for part in [*entrypoint, *command]]


def _parse_cli(argv: list[str]) -> Any:
    assert argv[0] == "bff", argv
    try:
        return build_parser().parse_args(argv[1:])
    except SystemExit as exc:  # argparse exits on an unknown command or flag
        raise AssertionError(f"not a valid bff command line: {shlex.join(argv)}") from exc


def _container_port(mapping: str) -> int:
    return int(mapping.rsplit(":", 1)[-1])


#: The images compose builds: the product (deploy/Dockerfile) and the demo image with bff-devtools.
PRODUCT_IMAGE = "bff:local"
DEVTOOLS_IMAGE = "bff-devtools:local"


def _bff_image_services() -> dict[str, dict[str, Any]]:
    images = (PRODUCT_IMAGE, DEVTOOLS_IMAGE)
    return {name: s for name, s in _compose()["services"].items() if s.get("image") in images}


def _mounted_config(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """deploy/bff.toml as the bff container sees it: container paths of its mounts mapped back to the host."""
    service = _compose()["services"]["bff"]
    text = (DEPLOY / "bff.toml").read_text()
    config_path = None
    for volume in service["volumes"]:
        host, container, *_ = volume.split(":")
        host_path = (DEPLOY / host).resolve()
        assert host_path.exists(), f"compose mounts {host}, which does not exist"
        if container == _parse_cli(_argv(service)).config:
            config_path = host_path
        else:
            text = text.replace(f'"{container}"', json.dumps(str(host_path)))
    assert config_path == (DEPLOY / "bff.toml").resolve(), "the config bff is given must be the mounted deploy/bff.toml"
    rewritten = tmp_path / "bff.toml"
    rewritten.write_text(text)
    return rewritten, {k: _interpolate(str(v)) for k, v in service["environment"].items()}


@pytest.fixture
def deployed_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Config]:
    path, env = _mounted_config(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return path, load_config(path)


def test_every_compose_command_is_a_bff_command() -> None:
    services = _bff_image_services()
    assert set(services) == {"bff", "idp", "demo-api"}
    commands = {name: _parse_cli(_argv(service)).command for name, service in services.items()}
    assert commands == {"bff": "serve", "idp": "devidp", "demo-api": "demo-api"}


def test_only_the_demo_services_run_the_devtools_image() -> None:
    services = _bff_image_services()
    images = {name: (s["image"], s["build"]["dockerfile"]) for name, s in services.items()}
    assert images == {
        "bff": (PRODUCT_IMAGE, "deploy/Dockerfile"),
        "idp": (DEVTOOLS_IMAGE, "deploy/Dockerfile.devtools"),
        "demo-api": (DEVTOOLS_IMAGE, "deploy/Dockerfile.devtools"),
    }


def test_the_devtools_dockerfile_builds_bff_with_the_devtools() -> None:
    docker = _dockerfile("Dockerfile.devtools")
    assert any("devtools" in copy for copy in docker["COPY"])
    assert any("pip wheel" in run and "./devtools" in run for run in docker["RUN"])
    assert any(run.split("&&")[0].rstrip().endswith(" bff-devtools") for run in docker["RUN"] if "pip install" in run)
    assert docker["USER"][-1].split(":")[0] not in ("0", "root")
    assert json.loads(docker["ENTRYPOINT"][-1]) == ["bff"]
    ignore = (DEPLOY / "Dockerfile.devtools.dockerignore").read_text().split()
    assert "!devtools/" in ignore


def test_compose_ports_are_the_ports_the_commands_listen_on(deployed_config: tuple[Path, Config]) -> None:
    services = _bff_image_services()
    _, config = deployed_config
    assert [_container_port(p) for p in services["bff"]["ports"]] == [config.server.port]
    assert config.server.host == "0.0.0.0"  # reachable from the other containers
    for name in ("idp", "demo-api"):
        args = _parse_cli(_argv(services[name]))
        assert args.host == "0.0.0.0", name
        assert [_container_port(p) for p in services[name].get("ports", [])] in ([], [args.port])


def test_the_mounted_config_passes_bff_check(
    deployed_config: tuple[Path, Config], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = deployed_config
    assert main(["check", "--config", str(path)]) == 0
    assert "OK" in capsys.readouterr().out


def test_the_services_agree_with_each_other(deployed_config: tuple[Path, Config]) -> None:
    _, config = deployed_config
    services = _bff_image_services()
    idp = _parse_cli(_argv(services["idp"]))
    api = _parse_cli(_argv(services["demo-api"]))
    assert idp.issuer == api.issuer == config.oidc.issuer
    assert idp.client_id == config.oidc.client_id
    assert config.oidc.client_secret is not None
    assert idp.client_secret == config.oidc.client_secret.reveal()
    assert idp.redirect_uri == [config.oidc.redirect_uri]  # repeatable flags: lists
    assert idp.post_logout_redirect_uri == [config.oidc.post_logout_redirect_uri]
    backchannel = urlsplit(idp.backchannel_logout_uri)
    assert (backchannel.hostname, backchannel.port) == ("bff", config.server.port)
    assert backchannel.path == "/bff/backchannel-logout"
    aliases = {
        name: {name, *(s.get("networks", {}).get("default", {}) or {}).get("aliases", [])}
        for name, s in _compose()["services"].items()
    }
    issuer = urlsplit(config.oidc.issuer)
    assert issuer.hostname in aliases["idp"]
    assert issuer.port == idp.port
    for route in config.routes:
        upstream = urlsplit(route.upstream)
        assert upstream.hostname in aliases["demo-api"]
        assert upstream.port == api.port
    store = urlsplit(config.session.store)
    assert store.hostname in aliases["redis"]
    assert urlsplit(idp.store).hostname in aliases["redis"]
    assert urlsplit(idp.store).path != store.path, "bff and the IdP use separate Redis databases"


def test_dockerfile_matches_the_cli() -> None:
    docker = _dockerfile()
    assert len(docker["FROM"]) >= 2, "multi-stage: build the wheel, then a slim runtime"
    assert any("pip wheel" in run for run in docker["RUN"])
    assert all("slim" in image for image in docker["FROM"])
    user = docker["USER"][-1].split(":")[0]
    assert user not in ("0", "root")
    assert json.loads(docker["ENTRYPOINT"][-1]) == ["bff", "serve"]
    _parse_cli(json.loads(docker["ENTRYPOINT"][-1]) + json.loads(docker["CMD"][-1]))
    healthcheck = docker["HEALTHCHECK"][-1]
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    assert command[0] == "python"
    assert "curl" not in healthcheck
    url = urlsplit(re.findall(r"https?://[^'\"]+", " ".join(command))[0])
    assert url.path in CONTROL_PATHS
    assert url.path == "/healthz"
    assert [str(url.port)] == docker["EXPOSE"]


def test_kubernetes_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    documents = {d["kind"]: d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "bff.yaml").read_text())}
    assert set(documents) >= {"ConfigMap", "Deployment", "Service"}
    deployment = documents["Deployment"]["spec"]
    assert deployment["replicas"] >= 2
    (container,) = deployment["template"]["spec"]["containers"]
    _parse_cli(["bff", "serve", *container["args"]])
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"]}
    config_text = documents["ConfigMap"]["data"]["bff.toml"]
    assert set(re.findall(r"\$\{([A-Z_]+)\}", config_text)) == set(secrets)
    for name in secrets:
        monkeypatch.setenv(name, TEST_SECRET)
    (tmp_path / "bff.toml").write_text(config_text)
    config = load_config(tmp_path / "bff.toml")
    assert not config.session.store.startswith("memory:"), "replicas must share the store"
    assert container["ports"][0]["containerPort"] == config.server.port
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert documents["Service"]["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]
    # The drain and shutdown defaults ([server] drain_delay, shutdown_timeout: 5 s and 25 s) fit in the grace.
    server = config.server
    drain = getattr(server, "drain_delay", 5.0) + getattr(server, "shutdown_timeout", 25.0)
    assert deployment["template"]["spec"]["terminationGracePeriodSeconds"] > drain
