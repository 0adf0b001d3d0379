"""deploy/helm/bff: it lints, renders with every values set below into manifests that validate against the Kubernetes
schemas (kubernetes-validate bundles them: nothing is downloaded), and agrees with bff: the config it renders passes
``bff check`` with the environment the pod gets, every ``${NAME}`` in it comes from a Secret, the probes, ports and
shutdown grace match the config, and hostile values (a secret written into the config, a key the chart owns) are
refused. The registries this project uses have no helm binary: tests/support/helm.py renders the chart (stricter
than Helm), and real Helm (the helm-sdkpy wheel, ``make helm-venv``) renders every values set too: the last tests
check that both render the same documents and refuse the same values."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from bff.app import CONTROL_PATHS
from bff.cli import build_parser, main
from bff.config import load_config, parse_config
from bff.errors import ConfigError
from tests.support.helm import CHART, ChartError, Rendered, lint, merge, render

#: The oldest Kubernetes the chart supports (Chart.yaml kubeVersion: the preStop sleep action) and the newest
#: whose schemas kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
SECRET_VALUE = "helm-test-secret-0123456789-abcdefghijklmnop"
REDIS_URL = "redis://:helm-test-redis-password@redis:6379/0"

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "metrics": {"metrics": {"enabled": True}},
    "metrics-without-servicemonitor": {"metrics": {"enabled": True, "serviceMonitor": {"enabled": False}}},
    "autoscaling": {"autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12}},
    "locked-down": {
        "networkPolicy": {
            "httpFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}],
        },
        "podDisruptionBudget": {"enabled": False},
        "extraArgs": ["--workers", "2"],
        "extraEnv": [{"name": "OTEL_SERVICE_NAME", "value": "bff"}],
        "podAnnotations": {"example.com/team": "web"},
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway"}
        ],
    },
    "custom-config": {
        "containerPort": 8443,
        "shutdown": {"preStopSleepSeconds": 0, "drainDelaySeconds": 10, "timeoutSeconds": 50, "marginSeconds": 3},
        "redis": {"secretName": ""},
        "secrets": {"clientSecretKey": ""},
        "extraSecretEnv": [
            {"name": "BFF_SESSION_KEY_NEW", "secretName": "bff-secrets", "key": "session-key-new"},
            {"name": "BFF_REDIS", "secretName": "bff-redis", "key": "url"},
        ],
        "config": {
            "session": {"keys": ["${BFF_SESSION_KEY}", "${BFF_SESSION_KEY_NEW}"], "store": "${BFF_REDIS}"},
            "oidc": {
                "client_secret": None,
                "token_endpoint_auth_method": "none",
                "extra_auth_params": {"prompt": "login", "audience": "orders"},
                "clock_skew": "30s",
            },
            "server": {"max_connections": 2048, "trusted_proxies": []},
            "tokens": {"refresh_leeway": "45s"},
            "logging": {"format": "json"},
            "routes": [
                {"path": "/api", "upstream": "https://api.example.com", "token": "user", "max_body": "1MiB"},
                {
                    "path": "/catalogue",
                    "upstream": "https://catalogue.example.com",
                    "token": "none",
                    "strip_prefix": False,
                    "methods": ["GET", "HEAD"],
                    "set_headers": {"X-Via": "bff"},
                },
            ],
        },
    },
    "frontends": {
        "extraSecretEnv": [{"name": "BFF_ADMIN_CLIENT_SECRET", "secretName": "bff-secrets", "key": "admin-secret"}],
        "config": {
            "server": {"public_origin": None},
            "oidc": None,
            "routes": None,
            "frontends": [
                {
                    "name": "shop",
                    "host": "shop.example.com",
                    "public_origin": "https://shop.example.com",
                    "cookie_name": "__Host-shop",
                    "oidc": {
                        "issuer": "https://login.example.com",
                        "client_id": "shop-bff",
                        "client_secret": "${BFF_CLIENT_SECRET}",
                    },
                    "routes": [{"path": "/api", "upstream": "https://api.example.com", "token": "user"}],
                },
                {
                    "name": "admin",
                    "host": "admin.example.com",
                    "path_prefix": "/console",
                    "public_origin": "https://admin.example.com",
                    "cookie_name": "__Host-admin",
                    "oidc": {
                        "issuer": "https://login.example.com/realms/staff",
                        "client_id": "admin-bff",
                        "client_secret": "${BFF_ADMIN_CLIENT_SECRET}",
                        "extra_auth_params": {"prompt": "login"},
                    },
                    "routes": [
                        {"path": "/api/users", "upstream": "https://users.example.com", "methods": ["GET", "POST"]},
                        {"path": "/api/audit", "upstream": "https://audit.example.com", "timeout": "5s"},
                    ],
                },
            ],
        },
    },
}


@pytest.fixture(params=sorted(VALUE_SETS), scope="module")
def rendered(request: pytest.FixtureRequest) -> Rendered:
    return render(VALUE_SETS[request.param])


def _container(rendered: Rendered) -> dict[str, Any]:
    (container,) = rendered.one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def _secret_env(rendered: Rendered) -> dict[str, tuple[str, str]]:
    refs = {}
    for entry in _container(rendered)["env"]:
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            refs[entry["name"]] = (ref["name"], ref["key"])
    return refs


def _config_text(rendered: Rendered) -> str:
    text: str = rendered.one("ConfigMap")["data"]["bff.toml"]
    return text


def _write_with_env(text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rendered: Rendered) -> Path:
    """The rendered bff.toml as the pod sees it (every Secret's variable set)."""
    for name in _secret_env(rendered):
        monkeypatch.setenv(name, REDIS_URL if name in ("BFF_SESSION__STORE", "BFF_REDIS") else SECRET_VALUE + name)
    path = tmp_path / "bff.toml"
    path.write_text(text)
    return path


# -- lint and schemas ------------------------------------------------------------------------------------------------


def test_the_chart_lints() -> None:
    lint()


def test_every_manifest_validates_against_the_kubernetes_schemas(rendered: Rendered) -> None:
    checked = set()
    for document in rendered.documents:
        if document["apiVersion"] == "monitoring.coreos.com/v1":
            continue  # a CRD of the Prometheus Operator: checked by test_servicemonitor_only_with_metrics
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{document['kind']} is invalid for Kubernetes {version}: {exc}")
        checked.add(document["kind"])
    assert {"ConfigMap", "Deployment", "Service"} <= checked


def test_an_invalid_manifest_is_caught_by_the_validation() -> None:
    """The validation can fail: a probe port that is no port name or number is refused."""
    deployment = render({}).one("Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"] = "2"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


# -- the config agrees with bff ---------------------------------------------------------------------------------------


def test_every_key_of_the_config_is_one_bff_knows_or_a_pending_one(rendered: Rendered) -> None:
    document = tomllib.loads(_config_text(rendered))
    env = {name: SECRET_VALUE + name for name in _secret_env(rendered)}
    try:
        parse_config(document, env=env)
        problems = ""
    except ConfigError as exc:
        problems = str(exc)
    unknown = set(re.findall(r"- ([\w.\[\]]+): unknown key", problems))
    assert unknown <= {"server.drain_delay", "server.shutdown_timeout", "metrics"}, problems
    assert document["server"]["listen"] == f"0.0.0.0:{_container(rendered)['ports'][0]['containerPort']}"


def test_an_unknown_key_in_the_values_is_caught() -> None:
    """The check above can fail: a key bff does not know, passed through the values, is reported."""
    rendered = render({"config": {"oidc": {"clock_skw": "30s"}}})
    with pytest.raises(ConfigError, match=r"oidc\.clock_skw: unknown key"):
        parse_config(tomllib.loads(_config_text(rendered)), env={"BFF_SESSION_KEY": SECRET_VALUE})


def test_the_config_passes_bff_check_with_the_pods_environment(
    rendered: Rendered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write_with_env(_config_text(rendered), tmp_path, monkeypatch, rendered)
    assert main(["check", "--config", str(path)]) == 0, capsys.readouterr()
    config = load_config(path)
    assert config.server.host == "0.0.0.0"  # reachable through the Service
    assert config.server.port == _container(rendered)["ports"][0]["containerPort"]
    assert config.session.store.startswith("redis"), "replicas must share the store"
    assert all(key.reveal().startswith(SECRET_VALUE) for key in config.session.keys)


def test_the_whole_config_passes_bff_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rendered = render({"metrics": {"enabled": True}})
    path = _write_with_env(_config_text(rendered), tmp_path, monkeypatch, rendered)
    assert main(["check", "--config", str(path)]) == 0, capsys.readouterr()


def test_every_reference_in_the_config_comes_from_a_secret_and_no_secret_is_in_it(rendered: Rendered) -> None:
    text = _config_text(rendered)
    references = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)\}", text))
    assert references == set(_secret_env(rendered))
    document = tomllib.loads(text)
    assert all(re.fullmatch(r"\$\{[A-Z_0-9]+\}", key) for key in document["session"]["keys"])
    assert re.fullmatch(r"\$\{[A-Z_0-9]+\}", document["session"]["store"])
    for oidc in [document.get("oidc", {}), *(entry["oidc"] for entry in document.get("frontends", []))]:
        assert re.fullmatch(r"\$\{[A-Z_0-9]+\}", oidc.get("client_secret", "${X}"))
    plain = {e["name"] for e in _container(rendered)["env"] if "value" in e}
    assert not plain & references


def test_the_container_runs_bff_serve_with_the_mounted_config(rendered: Rendered) -> None:
    container = _container(rendered)
    args = build_parser().parse_args(["serve", *container["args"]])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert Path(args.config).parent == Path(mounts["config"])
    volumes = {v["name"]: v for v in rendered.one("Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == rendered.one("ConfigMap")["metadata"]["name"]
    assert Path(args.config).name in rendered.one("ConfigMap")["data"]


# -- Kubernetes wiring -----------------------------------------------------------------------------------------------


def test_probes_hit_bffs_health_endpoints(rendered: Rendered) -> None:
    container = _container(rendered)
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert {"/readyz", "/healthz"} <= set(CONTROL_PATHS)


def test_termination_grace_covers_the_prestop_the_drain_and_the_shutdown(rendered: Rendered) -> None:
    shutdown = rendered.values["shutdown"]
    spec = rendered.one("Deployment")["spec"]["template"]["spec"]
    document = tomllib.loads(_config_text(rendered))["server"]
    assert document["drain_delay"] == f"{shutdown['drainDelaySeconds']}s"
    assert document["shutdown_timeout"] == f"{shutdown['timeoutSeconds']}s"
    prestop = _container(rendered)["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert prestop == shutdown["preStopSleepSeconds"]
    needed = prestop + shutdown["drainDelaySeconds"] + shutdown["timeoutSeconds"]
    assert spec["terminationGracePeriodSeconds"] > needed
    assert spec["terminationGracePeriodSeconds"] == needed + shutdown["marginSeconds"]


def test_security_context_is_the_one_of_the_plain_manifest(rendered: Rendered) -> None:
    plain = {d["kind"]: d for d in yaml.safe_load_all((CHART.parents[1] / "kubernetes" / "bff.yaml").read_text())}
    plain_spec = plain["Deployment"]["spec"]["template"]["spec"]
    spec = rendered.one("Deployment")["spec"]["template"]["spec"]
    assert spec["securityContext"] == plain_spec["securityContext"]
    assert _container(rendered)["securityContext"] == plain_spec["containers"][0]["securityContext"]
    assert spec["automountServiceAccountToken"] is False
    assert _container(rendered)["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_rolling_updates_never_go_below_the_desired_count(rendered: Rendered) -> None:
    strategy = rendered.one("Deployment")["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0


def test_selectors_pick_the_pods(rendered: Rendered) -> None:
    pod_labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    selectors = [rendered.one("Service")["spec"]["selector"], rendered.one("Deployment")["spec"]["selector"]]
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        if kind in rendered.kinds():
            selectors.append(rendered.one(kind)["spec"].get("selector") or rendered.one(kind)["spec"]["podSelector"])
    for selector in selectors:
        labels = selector.get("matchLabels", selector)
        assert labels.items() <= pod_labels.items()


def test_replicas_or_an_autoscaler_never_both(rendered: Rendered) -> None:
    spec = rendered.one("Deployment")["spec"]
    if rendered.values["autoscaling"]["enabled"]:
        assert "replicas" not in spec
        hpa = rendered.one("HorizontalPodAutoscaler")["spec"]
        assert hpa["scaleTargetRef"]["name"] == rendered.one("Deployment")["metadata"]["name"]
        assert hpa["minReplicas"] >= 2
    else:
        assert spec["replicas"] >= 2
        assert "HorizontalPodAutoscaler" not in rendered.kinds()


def test_the_metrics_port_and_servicemonitor_only_with_metrics(rendered: Rendered) -> None:
    metrics = rendered.values["metrics"]
    ports = {p["name"]: p["containerPort"] for p in _container(rendered)["ports"]}
    service_ports = {p["name"]: p for p in rendered.one("Service")["spec"]["ports"]}
    document = tomllib.loads(_config_text(rendered))
    policy = rendered.one("NetworkPolicy")["spec"] if "NetworkPolicy" in rendered.kinds() else {"ingress": []}
    policy_ports = {p["port"] for rule in policy["ingress"] for p in rule["ports"]}
    if not metrics["enabled"]:
        assert set(ports) == set(service_ports) == {"http"}
        assert "metrics" not in document
        assert "ServiceMonitor" not in rendered.kinds()
        assert "metrics" not in policy_ports
        return
    assert ports["metrics"] == metrics["port"]
    assert document["metrics"]["listen"] == f"0.0.0.0:{metrics['port']}"
    assert service_ports["metrics"]["targetPort"] == "metrics"
    assert "metrics" in policy_ports or not policy["ingress"]
    if metrics["serviceMonitor"]["enabled"]:
        monitor = rendered.one("ServiceMonitor")["spec"]
        (endpoint,) = monitor["endpoints"]
        assert endpoint["port"] in service_ports
        assert endpoint["path"] == "/metrics"
        assert monitor["selector"]["matchLabels"].items() <= rendered.one("Service")["metadata"]["labels"].items()
    else:
        assert "ServiceMonitor" not in rendered.kinds()


def test_a_config_change_rolls_the_pods() -> None:
    def checksum(values: dict[str, Any]) -> str:
        annotations = render(values).one("Deployment")["spec"]["template"]["metadata"]["annotations"]
        value: str = annotations["checksum/config"]
        return value

    base = checksum({})
    assert checksum({}) == base
    assert checksum({"config": {"session": {"idle_timeout": "1h"}}}) != base
    assert checksum({"shutdown": {"drainDelaySeconds": 7}}) != base


# -- hostile values --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"config": {"session": {"keys": [SECRET_VALUE]}}}, "session.keys"),
        ({"config": {"oidc": {"client_secret": SECRET_VALUE}}}, "oidc.client_secret"),
        ({"config": {"server": {"listen": "0.0.0.0:9000"}}}, "config.server"),
        ({"config": {"server": {"shutdown_timeout": "1h"}}}, "config.server"),
        ({"config": {"metrics": {"listen": "0.0.0.0:1"}}}, "config"),
        ({"replicaCount": 0}, "replicaCount"),
        ({"shutdown": {"timeoutSeconds": "25s"}}, "shutdown.timeoutSeconds"),
        ({"extraEnv": [{"name": "BAD NAME", "value": "x"}]}, "extraEnv.0.name"),
        ({"config": {"routes": [{"path": "/api", "upstream": {"nested": {"table": 1}}}]}}, "config.routes.0.upstream"),
        ({"strategy": {"type": "Recreate"}}, "strategy.type"),
    ],
)
def test_the_schema_refuses(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ChartError, match=re.escape(message)):
        render(values)


def test_frontends_render_to_frontends_entries_bff_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rendered = render(VALUE_SETS["frontends"])
    path = _write_with_env(_config_text(rendered), tmp_path, monkeypatch, rendered)
    assert main(["check", "--config", str(path)]) == 0, capsys.readouterr()
    shop, admin = load_config(path).frontends
    assert (shop.name, shop.host, shop.cookie_name, shop.oidc.client_id) == (
        "shop",
        "shop.example.com",
        "__Host-shop",
        "shop-bff",
    )
    assert (admin.path_prefix, admin.oidc.issuer) == ("/console", "https://login.example.com/realms/staff")
    assert admin.oidc.client_secret is not None
    assert admin.oidc.client_secret.reveal() == SECRET_VALUE + "BFF_ADMIN_CLIENT_SECRET"
    assert dict(admin.oidc.extra_auth_params) == {"prompt": "login"}
    assert [(r.path, r.methods) for r in admin.routes] == [
        ("/api/users", ("GET", "POST")),
        ("/api/audit", admin.routes[1].methods),
    ]
    assert admin.routes[1].timeout == 5.0
    assert [r.upstream for r in shop.routes] == ["https://api.example.com"]


@pytest.mark.parametrize("key", ["oidc", "routes", "server.public_origin"])
def test_frontends_with_a_top_level_per_frontend_key_are_refused(key: str) -> None:
    values = merge(VALUE_SETS["frontends"], {})
    section, _, name = key.partition(".")
    if name:
        values["config"][section][name] = "https://app.example.com"
    else:
        values["config"][section] = (
            {"issuer": "https://login.example.com", "client_id": "x"} if section == "oidc" else []
        )
    with pytest.raises(ChartError, match=re.escape(f"config.{key} is per frontend")):
        render(values)


def test_the_schema_refuses_a_frontend_without_a_name() -> None:
    values = merge(VALUE_SETS["frontends"], {})
    del values["config"]["frontends"][0]["name"]
    with pytest.raises(ChartError, match=re.escape("config.frontends.0")):
        render(values)


def test_a_store_in_the_config_and_from_a_secret_is_refused() -> None:
    with pytest.raises(ChartError, match="both set"):
        render({"config": {"session": {"store": "redis://redis:6379/0"}}})


def test_the_merge_follows_helm() -> None:
    assert merge({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"c": None, "d": 3}, "l": [2]}) == {
        "a": {"b": 1, "d": 3},
        "l": [2],
    }


# -- real Helm -------------------------------------------------------------------------------------------------------

HELM_PYTHON = Path(os.environ.get("BFF_HELM_PYTHON", Path(__file__).resolve().parents[1] / ".venv-helm/bin/python"))
needs_helm = pytest.mark.skipif(
    not HELM_PYTHON.exists(), reason=f"no real Helm: `make helm-venv` creates {HELM_PYTHON}"
)


def real_helm(overrides: dict[str, Any], tmp_path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Helm's rendering of the chart with the values (merged as above) and its errors: lint messages of severity 3
    (values against the schema, templates that do not parse or render) and the chart's own ``fail`` messages."""
    values = tmp_path / "values.json"
    values.write_text(json.dumps(merge(yaml.safe_load((CHART / "values.yaml").read_text()), overrides)))
    script = Path(__file__).resolve().parent / "support" / "helm_sdk_render.py"
    done = subprocess.run(
        [str(HELM_PYTHON), str(script), str(CHART), str(values)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rendered = {
        m[1]: base64.b64decode(m[2]).decode() for m in re.finditer(r"BFF-RENDERED (\S+) ([A-Za-z0-9+/=]+)", done.stderr)
    }
    errors = [f"{m['path']}: severity {m['severity']}" for m in json.loads(done.stdout) if m["severity"] >= 3]
    errors += re.findall(r'fail message="(?!BFF-RENDERED)([^"]*)"', done.stderr)
    documents = [d for text in rendered.values() for d in yaml.safe_load_all(text) if d]
    return documents, errors


@needs_helm
@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_renders_what_the_python_renderer_renders(name: str, tmp_path: Path) -> None:
    theirs, errors = real_helm(VALUE_SETS[name], tmp_path)
    assert not errors
    ours = render(VALUE_SETS[name], release="test-release").documents  # helm lint's release name

    def key(document: dict[str, Any]) -> tuple[str, str]:
        return document["kind"], document["metadata"]["name"]

    assert len(theirs) == len(ours) >= 4
    assert sorted(theirs, key=key) == sorted(ours, key=key)


@needs_helm
@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"config": {"session": {"keys": [SECRET_VALUE]}}}, "values.yaml: severity 3"),
        ({"config": {"server": {"listen": "0.0.0.0:9000"}}}, "values.yaml: severity 3"),
        ({"config": {"session": {"store": "redis://redis:6379/0"}}}, "both set"),
    ],
)
def test_helm_refuses_what_the_python_renderer_refuses(values: dict[str, Any], error: str, tmp_path: Path) -> None:
    with pytest.raises(ChartError):
        render(values)
    _, errors = real_helm(values, tmp_path)
    assert any(error in e for e in errors), errors
