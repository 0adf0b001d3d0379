"""Real Helm (v4, through the helm-sdkpy wheel, which needs Python >= 3.12) lints and renders the bff chart.

Run by tests/test_helm_chart.py with the interpreter of ``.venv-helm`` (``make helm-venv``), never imported by the
suite: ``python helm_sdk_render.py CHART VALUES_JSON``. helm-sdkpy exposes ``helm lint`` but no client-only
``helm template``; in lint mode Helm's ``fail`` logs its message instead of stopping, so each template of a copy
of the chart is wrapped to ``fail`` with its own rendering, base64-encoded, and the parent reads the log (stderr).
The values file replaces the copy's values.yaml, so Helm checks it against values.schema.json as an install would.
Prints the lint messages as JSON on stdout: ``[{"severity": n, "path": p}]`` (3 is an error).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path

import helm_sdkpy

MARKER = "BFF-RENDERED"


def wrap(chart: Path) -> None:
    for template in sorted((chart / "templates").glob("*.yaml")):
        name = template.name
        body = template.read_text()
        (chart / "templates" / f"_wrapped_{template.stem}.tpl").write_text(
            f'{{{{- define "wrapped/{name}" -}}}}\n{body}{{{{- end -}}}}\n'
        )
        template.write_text(
            f'{{{{ fail (printf "{MARKER} %s %s" "{name}" (include "wrapped/{name}" . | b64enc)) }}}}\n'
        )


def main() -> int:
    chart, values = Path(sys.argv[1]), Path(sys.argv[2])
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / chart.name
        shutil.copytree(chart, copy)
        shutil.copyfile(values, copy / "values.yaml")  # JSON is YAML
        wrap(copy)
        result = asyncio.run(helm_sdkpy.Lint(helm_sdkpy.Configuration()).run(str(copy)))
    messages = [{"severity": m["Severity"], "path": m["Path"]} for m in result.get("Messages") or []]
    print(json.dumps(messages))  # noqa: T201 - the parent reads stdout
    return 0


if __name__ == "__main__":
    sys.exit(main())
