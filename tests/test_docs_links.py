"""The docs live in the repository: every Markdown link points at a file of the repository, never outside it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "deploy" / "README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_stays_in_the_repository_and_resolves(doc: Path) -> None:
    problems = []
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        path = target.split("#", 1)[0]
        if "://" in target or target.startswith(("mailto:", "//")):
            problems.append(f"{target}: leaves the repository")
        elif path:
            resolved = (doc.parent / path).resolve()
            if not resolved.is_relative_to(ROOT):
                problems.append(f"{target}: outside the repository")
            elif not resolved.exists():
                problems.append(f"{target}: no such file")
    assert not problems, problems


def test_the_docs_the_architecture_promises_exist() -> None:
    for name in ("architecture.md", "configuration.md", "performance.md", "security.md"):
        assert (ROOT / "docs" / name).is_file(), name
