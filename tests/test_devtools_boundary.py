"""The product does not carry the developer tools: ``bff --help`` and ``bff check`` (run as subprocesses, as an
operator runs them) load neither the reference IdP nor the demo nor authlib, and the production image's build
context (``deploy/Dockerfile`` with its ``.dockerignore``) holds no devtools and installs no authlib.

The devtools' commands (``bff demo``, ``bff demo-api``, ``bff devidp``) are entry points of the ``bff.commands``
group: ``bff --help`` lists them by name, and only the command that runs is imported.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Modules the product's everyday commands must not load: the devtools' packages and the libraries only they use.
DEVTOOLS_MODULES = ("bff_devtools", "bff_devtools.devidp", "bff_devtools.demo", "authlib", "aiohttp")

_PROBE = """
import json, sys
from bff.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


#: The secrets config/development.toml reads from the environment.
_ENV = {"BFF_SESSION_KEY": "s" * 40, "BFF_CLIENT_SECRET": "c" * 40}


def _run_cli(*argv: str) -> tuple[int, str, list[str]]:
    """``bff ARGV`` in a fresh interpreter: its exit code, its stdout, and every module it loaded."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **_ENV},
        timeout=60,
        check=False,
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return int(report["code"] or 0), done.stdout, list(report["modules"])


def _loaded_devtools(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == d or m.startswith(d + ".") for d in DEVTOOLS_MODULES)]


def test_bff_help_lists_the_devtools_commands_without_loading_them() -> None:
    code, out, modules = _run_cli("--help")
    assert code == 0
    for command in ("serve", "check", "sessions", "demo", "demo-api", "devidp"):
        assert re.search(rf"^\s+{re.escape(command)}\s", out, re.MULTILINE), (command, out)
    assert _loaded_devtools(modules) == []


def test_bff_check_loads_no_devtools() -> None:
    code, out, modules = _run_cli("check", "--config", "config/development.toml")
    assert code == 0
    assert "OK" in out
    assert _loaded_devtools(modules) == []


def test_a_devtools_command_loads_only_its_own_package() -> None:
    code, out, modules = _run_cli("devidp", "--help")
    assert code == 0
    assert "--issuer" in out
    assert "bff_devtools.devidp.cli" in modules
    assert not [m for m in modules if m.startswith("bff_devtools.demo")]


@pytest.mark.parametrize("argv", [["demo-api", "--help"], ["demo", "--help"]])
def test_the_demo_commands_still_run_through_bff(argv: list[str]) -> None:
    code, out, _ = _run_cli(*argv)
    assert code == 0
    assert "--port" in out


# --- the production image ---------------------------------------------------------------------------------------


def _dockerignore_rules() -> list[tuple[bool, str]]:
    """(exclude?, pattern) in order: the last matching rule wins (Docker's .dockerignore semantics)."""
    rules = []
    for line in (ROOT / "deploy" / "Dockerfile.dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((not negated, line.lstrip("!").strip("/")))
    return rules


def _matches(pattern: str, path: str) -> bool:
    """``pattern`` matches ``path`` or one of its parent directories; ``**/`` also matches no directory."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    patterns = [pattern, pattern[3:]] if pattern.startswith("**/") else [pattern]
    return any(
        fnmatch.fnmatchcase(c, p) and ("*" in p or "/" in p or c.count("/") == p.count("/"))
        for p in patterns
        for c in candidates
    )


def _build_context() -> list[str]:
    """The repository files Docker sends for ``docker build -f deploy/Dockerfile .`` (tracked files only)."""
    files = subprocess.run(
        ["git", "ls-files"], capture_output=True, text=True, cwd=ROOT, timeout=30, check=True
    ).stdout.splitlines()
    rules = _dockerignore_rules()
    context = []
    for path in files:
        excluded = False
        for exclude, pattern in rules:
            if _matches(pattern, path):
                excluded = exclude
        if not excluded:
            context.append(path)
    return context


def _copied(context: list[str]) -> list[str]:
    """The context files the Dockerfile's build stage COPYs."""
    sources: list[str] = []
    for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources.extend(line.split()[1:-1])
    return [p for p in context if any(p == s.rstrip("/") or p.startswith(s.rstrip("/") + "/") for s in sources)]


def test_the_production_image_copies_no_devtools() -> None:
    context = _build_context()
    assert "bff/cli/__init__.py" in context
    assert not [p for p in context if p.startswith("devtools/") or "devidp" in p or "/demo/" in p]
    copied = _copied(context)
    assert "pyproject.toml" in copied
    for path in copied:
        if path.endswith(".py"):
            text = (ROOT / path).read_text()
            assert not re.search(r"^\s*(from|import) (authlib|aiohttp|bff_devtools)\b", text, re.MULTILINE), path


def test_the_production_image_installs_neither_authlib_nor_aiohttp() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [re.split(r"[<>=\[; ]", d, maxsplit=1)[0].lower() for d in project["dependencies"]]
    assert "authlib" not in names
    assert "aiohttp" not in names
    assert "websockets" in names  # the dev-server relay's client, stated rather than inherited from uvicorn
    installs = [line for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines() if "pip install" in line]
    assert installs
    assert all("devtools" not in line for line in installs)


def test_a_tool_cannot_replace_a_product_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed tool naming itself ``serve`` is ignored: ``bff serve`` stays the product's."""
    import importlib.metadata

    from bff import cli

    impostor = importlib.metadata.EntryPoint(name="serve", value="tests.no_such_module:register", group="bff.commands")
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [impostor] if group == "bff.commands" else [])
    for argv in (None, ["serve", "--config", "x.toml"]):
        args = cli.build_parser(argv).parse_args(["serve", "--config", "x.toml"])
        assert args.func is cli.cmd_serve
