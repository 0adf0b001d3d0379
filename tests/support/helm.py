"""``helm lint`` and ``helm template`` for deploy/helm/bff, in Python (tests/support/gotemplate.py renders).

Helm's order: the chart's values.yaml, then each override deep-merged over it (maps merge key by key, a null
deletes the key, anything else replaces), the merged values checked against values.schema.json, then every
template outside ``_*.tpl`` rendered with ``.Values``, ``.Release``, ``.Chart`` and split into YAML documents.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tests.support.gotemplate import Renderer, TemplateError

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "bff"
_SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class ChartError(Exception):
    """What ``helm lint`` or ``helm template`` would refuse."""


@dataclass(frozen=True)
class Rendered:
    """The manifests of one rendering, by kind (one of each kind in this chart), and the values used."""

    documents: list[dict[str, Any]]
    values: dict[str, Any]

    def kinds(self) -> set[str]:
        return {d["kind"] for d in self.documents}

    def one(self, kind: str) -> dict[str, Any]:
        (document,) = [d for d in self.documents if d["kind"] == kind]
        return document


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of values: maps deep-merged, null deletes, lists and scalars replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def chart_metadata(chart: Path = CHART) -> dict[str, Any]:
    metadata: dict[str, Any] = yaml.safe_load((chart / "Chart.yaml").read_text())
    return metadata


def lint(chart: Path = CHART) -> None:
    """The checks of ``helm lint`` that apply: Chart.yaml, values against the schema, every template renders."""
    metadata = chart_metadata(chart)
    if metadata.get("apiVersion") != "v2":
        raise ChartError("Chart.yaml: apiVersion must be v2")
    if metadata.get("name") != chart.name:
        raise ChartError(f"Chart.yaml: name {metadata.get('name')!r} is not the directory name {chart.name!r}")
    for key in ("version", "appVersion"):
        if not _SEMVER.match(str(metadata.get(key, ""))):
            raise ChartError(f"Chart.yaml: {key} {metadata.get(key)!r} is not semver")
    render({}, chart=chart)


def render(
    overrides: dict[str, Any], *, release: str = "web", namespace: str = "apps", chart: Path = CHART
) -> Rendered:
    """``helm template <release> <chart> -f overrides``: the documents, parsed."""
    metadata = chart_metadata(chart)
    values = merge(yaml.safe_load((chart / "values.yaml").read_text()) or {}, overrides)
    schema_file = chart / "values.schema.json"
    if schema_file.exists():
        try:
            jsonschema.Draft7Validator(json.loads(schema_file.read_text())).validate(values)
        except jsonschema.ValidationError as exc:
            path = ".".join(str(p) for p in exc.absolute_path) or "(root)"
            raise ChartError(f"values don't meet the specifications of the schema: {path}: {exc.message}") from exc
    renderer = Renderer()
    templates = sorted((chart / "templates").iterdir())
    for template in templates:
        if template.suffix in (".yaml", ".tpl"):
            renderer.add(f"{chart.name}/templates/{template.name}", template.read_text())
    data = {
        "Values": values,
        "Release": {"Name": release, "Namespace": namespace, "Service": "Helm", "IsInstall": True},
        "Chart": {"Name": metadata["name"], "Version": metadata["version"], "AppVersion": metadata["appVersion"]},
        "Template": {"BasePath": f"{chart.name}/templates"},
    }
    documents: list[dict[str, Any]] = []
    for template in templates:
        if template.suffix != ".yaml" or template.name.startswith("_"):
            continue
        name = f"{chart.name}/templates/{template.name}"
        try:
            text = renderer.render(name, {**data, "Template": {**data["Template"], "Name": name}})
        except TemplateError as exc:
            raise ChartError(f"{name}: {exc}") from exc
        try:
            parsed = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            raise ChartError(f"{name} renders invalid YAML: {exc}\n{text}") from exc
        for document in parsed:
            if not isinstance(document, dict) or not {"apiVersion", "kind", "metadata"} <= document.keys():
                raise ChartError(f"{name}: a document without apiVersion, kind and metadata")
            if not _DNS_LABEL.match(document["metadata"].get("name", "")):
                raise ChartError(f"{name}: metadata.name {document['metadata'].get('name')!r} is no DNS label")
        documents.extend(parsed)
    seen = [(d["kind"], d["metadata"]["name"]) for d in documents]
    if len(seen) != len(set(seen)):
        raise ChartError(f"two documents with the same kind and name: {seen}")
    return Rendered(documents, values)
