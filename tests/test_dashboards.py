"""deploy/grafana/bff-dashboard.json and deploy/prometheus/bff-alerts.yaml use exactly the metric names bff exports.

:func:`metric_names` reads every PromQL expression with a small tokenizer (strings, label matchers, ranges,
grouping label lists, numbers, Grafana variables, functions and keywords are not metric names; a histogram's
``_bucket``/``_sum``/``_count`` series name the histogram). The names are compared with docs' list below and with
the ``# TYPE`` lines of a real scrape of ``bff serve`` with ``[metrics] listen`` after a login, proxied calls and
a refresh. promtool (Debian's prometheus package) parses the rules and every dashboard query, and unit-tests each
alert on synthetic series: it fires on its scenario, and no alert fires on healthy traffic."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.bff_process import expire_session_token, scrape, serving_bff
from tests.support.browser import Browser
from tests.support.oidc_provider import TestProvider
from tests.support.redis_server import RedisProcess

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
DASHBOARD = DEPLOY / "grafana" / "bff-dashboard.json"
RULES = DEPLOY / "prometheus" / "bff-alerts.yaml"

#: What bff exports (../shared/TELEMETRY.md, docs/operations.md), with the Prometheus type of each family.
EXPORTED = {
    "http_server_request_duration_seconds": "histogram",
    "http_client_request_duration_seconds": "histogram",
    "bff_upstream_errors_total": "counter",
    "bff_token_refresh_total": "counter",
    "bff_token_refresh_duration_seconds": "histogram",
    "bff_sessions_created_total": "counter",
    "bff_sessions_ended_total": "counter",
    "bff_login_total": "counter",
    "bff_store_operation_duration_seconds": "histogram",
    "bff_store_errors_total": "counter",
    "bff_jwks_fetch_total": "counter",
    "bff_connections_open": "gauge",
    "bff_build_info": "gauge",
}

# -- the PromQL tokenizer --------------------------------------------------------------------------------------------

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_VARIABLES = re.compile(r"\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*")
_NUMBERS = re.compile(r"(?<![A-Za-z0-9_:])(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?(?:ms|[smhdwy])?)")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
#: PromQL's keywords and operators spelt as words (a function is recognised by the parenthesis after it).
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}
_KEYWORDS |= {"inf", "nan", "atan2", "start", "end"}
_HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def series_names(expression: str) -> set[str]:
    """The names of the series an expression selects, as written (``..._bucket`` included)."""
    text = _STRINGS.sub(" ", expression)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _VARIABLES.sub(" ", text)
    text = _NUMBERS.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group(0)
        if name.lower() in _KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue  # a keyword, or a function or aggregation: sum (...), rate(...)
        names.add(name)
    return names


def metric_names(expression: str) -> set[str]:
    """The metric families an expression reads: a histogram's series map to the histogram."""
    names = set()
    for name in series_names(expression):
        for suffix in _HISTOGRAM_SERIES:
            if name.endswith(suffix):
                name = name.removesuffix(suffix)
                break
        names.add(name)
    return names


def dashboard_expressions(dashboard: dict[str, Any]) -> list[str]:
    """Every query of every panel (rows' panels too)."""
    expressions: list[str] = []
    stack = list(dashboard["panels"])
    while stack:
        panel = stack.pop()
        stack.extend(panel.get("panels", []))
        expressions.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
    return expressions


def rule_expressions(rules: dict[str, Any]) -> list[str]:
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def used_names() -> dict[str, set[str]]:
    """Metric family -> the series names the dashboard and the rules use for it."""
    dashboard = json.loads(DASHBOARD.read_text())
    rules = yaml.safe_load(RULES.read_text())
    used: dict[str, set[str]] = {}
    for expression in dashboard_expressions(dashboard) + rule_expressions(rules):
        for series in series_names(expression):
            (family,) = metric_names(series)
            used.setdefault(family, set()).add(series)
    return used


# -- the tokenizer's own tests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        ("up", {"up"}),
        ('sum by (http_route) (rate(a_total{http_route=~"/api|x", kind!="rate(b)"}[5m]))', {"a_total"}),
        ("histogram_quantile(0.99, sum by (le, op) (rate(h_seconds_bucket[$__rate_interval])))", {"h_seconds"}),
        ("sum(rate(x_total[5m])) / sum(rate(x_total[5m] offset 1h)) > 0.05", {"x_total"}),
        ("a_total / on (job) group_left (version) b_info > bool 1e-3", {"a_total", "b_info"}),
        ("sum without (instance) (c) or absent(d_total) unless e", {"c", "d_total", "e"}),
        (
            "rate(h_sum[1m]) / rate(h_count[1m]) and count by (version, python) (bff_build_info)",
            {"h", "bff_build_info"},
        ),
        ('max_over_time(g{a="b"}[1h:5m]) * 0x10 - Inf + ${k} * $var', {"g"}),
        ("sum by(le)(rate(ns:recorded:rate5m[5m]))", {"ns:recorded:rate5m"}),
        ('label_replace(m, "dst", "$1", "src", "(.*)")', {"m"}),
    ],
)
def test_metric_names_of_an_expression(expression: str, names: set[str]) -> None:
    assert metric_names(expression) == names


def test_every_expression_was_read() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = dashboard_expressions(dashboard)
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(expressions) >= len(panels) > 10
    assert all(metric_names(e) for e in expressions), "an expression without a metric name"
    assert len(rule_expressions(yaml.safe_load(RULES.read_text()))) == 5


# -- the dashboard and the rules against the names bff exports -------------------------------------------------------


def test_the_dashboard_and_the_rules_use_every_exported_metric_and_no_other() -> None:
    used = used_names()
    assert set(used) == set(EXPORTED)
    for family, series in used.items():
        if EXPORTED[family] != "histogram":
            assert series == {family}, f"{family} is a {EXPORTED[family]}: no {series - {family}}"


def test_the_alerts_are_the_ones_operations_documents() -> None:
    rules = yaml.safe_load(RULES.read_text())
    alerts = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    assert set(alerts) == {
        "BffTokenRefreshFailing",
        "BffIdpUnavailable",
        "BffStoreErrors",
        "BffHigh5xxRatio",
        "BffHighP99Latency",
    }
    for name, rule in alerts.items():
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        assert rule["labels"]["severity"] in ("page", "ticket"), name
        assert rule["annotations"]["summary"], name
    operations = (DEPLOY.parent / "docs" / "operations.md").read_text()
    assert all(name in operations for name in alerts)


def test_dashboard_panels_have_unique_ids_and_use_the_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"


# -- promtool (Debian's prometheus package): the expressions parse, the alerts fire when they should -------------------

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="no promtool (apt-get install prometheus; .ci/run does)")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False)


@needs_promtool
def test_promtool_parses_the_rules_and_every_dashboard_expression(tmp_path: Path) -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Every dashboard query as a recording rule (Grafana's interval variable as a duration), so promtool parses it.
    expressions = dashboard_expressions(json.loads(DASHBOARD.read_text()))
    rules = [
        {"record": f"bff:dashboard:{i}", "expr": e.replace("$__rate_interval", "5m")} for i, e in enumerate(expressions)
    ]
    wrapped = tmp_path / "dashboard-rules.yaml"
    wrapped.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = promtool("check", "rules", str(wrapped))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(expressions)} rules found" in checked.stdout


@needs_promtool
def test_promtool_refuses_a_broken_expression(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [{"record": "r", "expr": "sum by (le (x)"}]}]}))
    assert promtool("check", "rules", str(broken)).returncode != 0


#: One scenario per alert, counters rising per minute ("0+60x40": 0, 60, 120, ...), evaluated at 35 min. Each
#: names the alerts it must fire (with their labels) and the others stay silent.
HEALTHY = [
    ('bff_token_refresh_total{outcome="ok"}', "0+60x40"),
    ('bff_token_refresh_total{outcome="invalid_grant"}', "0+30x40"),  # users' revoked tokens: no outage
    ('http_client_request_duration_seconds_count{bff_route="idp:token",http_response_status_code="200"}', "0+60x40"),
    ('http_server_request_duration_seconds_count{http_route="/api",http_response_status_code="200"}', "0+600x40"),
    ('http_server_request_duration_seconds_count{http_route="/api",http_response_status_code="502"}', "0+6x40"),
    ('http_server_request_duration_seconds_bucket{http_route="/api",le="0.1"}', "0+600x40"),
    ('http_server_request_duration_seconds_bucket{http_route="/api",le="+Inf"}', "0+606x40"),
    ('bff_store_errors_total{operation="get"}', "0x40"),
]
SCENARIOS: dict[str, tuple[list[tuple[str, str]], list[dict[str, str]]]] = {
    "healthy": ([], []),
    "refresh-failing": (
        [('bff_token_refresh_total{outcome="error"}', "0+10x40")],
        [{"alertname": "BffTokenRefreshFailing", "severity": "page"}],
    ),
    "idp-down": (
        [
            ('bff_token_refresh_total{outcome="idp_unavailable"}', "0+20x40"),
            (
                'http_client_request_duration_seconds_count{bff_route="idp:token",http_response_status_code="503"}',
                "0+90x40",
            ),
        ],
        [
            {"alertname": "BffTokenRefreshFailing", "severity": "page"},
            {"alertname": "BffIdpUnavailable", "severity": "page"},
        ],
    ),
    # Connections refused or timed out: IdP calls without an answer carry the status "error".
    "idp-unreachable": (
        [
            (
                'http_client_request_duration_seconds_count{bff_route="idp:token",http_response_status_code="error"}',
                "0+90x40",
            ),
        ],
        [{"alertname": "BffIdpUnavailable", "severity": "page"}],
    ),
    "store-errors": (
        [('bff_store_errors_total{operation="get"}', "0+1x40")],
        [{"alertname": "BffStoreErrors", "severity": "page", "operation": "get"}],
    ),
    "5xx": (
        [('http_server_request_duration_seconds_count{http_route="/api",http_response_status_code="500"}', "0+60x40")],
        [{"alertname": "BffHigh5xxRatio", "severity": "page"}],
    ),
    "slow": (
        [
            ('http_server_request_duration_seconds_bucket{http_route="/slow",le="0.1"}', "0+1x40"),
            ('http_server_request_duration_seconds_bucket{http_route="/slow",le="5"}', "0+100x40"),
            ('http_server_request_duration_seconds_bucket{http_route="/slow",le="+Inf"}', "0+100x40"),
        ],
        [{"alertname": "BffHighP99Latency", "severity": "ticket", "http_route": "/slow"}],
    ),
}


def _annotations(rule: dict[str, Any], labels: dict[str, str]) -> dict[str, str]:
    """The rule's annotations with ``{{ $labels.x }}`` filled in, as Prometheus renders them."""
    return {
        key: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], str(value))
        for key, value in rule["annotations"].items()
    }


@needs_promtool
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_each_alert_fires_on_its_scenario_and_no_other_does(scenario: str, tmp_path: Path) -> None:
    rules = {r["alert"]: r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    extra, firing = SCENARIOS[scenario]
    series = dict(HEALTHY)
    series.update(extra)
    expected: dict[str, list[dict[str, Any]]] = {name: [] for name in rules}
    for alert in firing:
        labels = {k: v for k, v in alert.items() if k != "alertname"}
        annotations = _annotations(rules[alert["alertname"]], labels)
        expected[alert["alertname"]].append({"exp_labels": labels, "exp_annotations": annotations})
    test = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": name, "values": values} for name, values in series.items()],
                "alert_rule_test": [
                    {"eval_time": "35m", "alertname": name, "exp_alerts": alerts} for name, alerts in expected.items()
                ],
            }
        ],
    }
    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump(test))
    result = promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


# -- a real scrape ---------------------------------------------------------------------------------------------------


def scraped_families(exposition: str) -> dict[str, str]:
    """``# TYPE`` lines of the Prometheus text format: family name -> type (counters keep ``_total``)."""
    families = {}
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            families[name] = kind
            if kind == "counter" and not name.endswith("_total"):
                families[name + "_total"] = kind
    return families


def test_scraped_families_of_the_text_format() -> None:
    exposition = (
        "# HELP bff_login_total Logins.\n# TYPE bff_login_total counter\n"
        'bff_login_total{outcome="ok"} 1.0\n# TYPE h_seconds histogram\nh_seconds_bucket{le="+Inf"} 1\n'
    )
    assert scraped_families(exposition) == {"bff_login_total": "counter", "h_seconds": "histogram"}


async def _traffic(origin: str, redis_url: str, config: Path) -> None:
    browser = Browser()
    try:
        await browser.follow(f"{origin}/bff/login")
        cookie = browser.cookies(origin)["__Host-bff"]
        for _ in range(3):
            assert (await browser.get(f"{origin}/api/items", headers={"X-CSRF": "1"})).status_code == 200
        await expire_session_token(redis_url, config, cookie)
        assert (await browser.get(f"{origin}/api/items", headers={"X-CSRF": "1"})).status_code == 200
        assert (await browser.get(f"{origin}/api/items")).status_code >= 400
        assert (await browser.request("POST", f"{origin}/bff/logout", headers={"X-CSRF": "1"})).status_code < 400
    finally:
        await browser.aclose()


async def test_every_metric_name_is_in_a_real_scrape(
    tmp_path: Path, redis_process: RedisProcess, idp: TestProvider, ok_upstream: str
) -> None:
    with serving_bff(tmp_path, redis_url=redis_process.url, provider=idp, upstream=ok_upstream, metrics=True) as bff:
        await asyncio.wait_for(_traffic(bff.url, redis_process.url, bff.config), 60)
        exposition = scrape(bff.metrics_port)
    families = scraped_families(exposition)
    used = used_names()
    missing = sorted(set(used) - set(families))
    assert not missing, f"the dashboard or the rules use metrics bff does not export: {missing}"
    for family, series in used.items():
        if series != {family}:
            assert families[family] == "histogram", f"{sorted(series)} are series of a histogram, {family} is not one"
    assert {name: families[name] for name in EXPORTED} == EXPORTED
