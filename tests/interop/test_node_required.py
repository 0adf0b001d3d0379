"""Without a usable Node.js the interop tests skip on a developer's machine and fail under CI (``CI=true``), so a
CI run without node cannot pass by skipping them."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.support.node_oidc_provider import require_node


def fake_node(directory: Path, version: str) -> None:
    """``node`` and ``npm`` on ``directory``; ``node --version`` prints ``version``."""
    for name, script in (("node", f"#!/bin/sh\necho {version}\n"), ("npm", "#!/bin/sh\nexit 0\n")):
        path = directory / name
        path.write_text(script)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.mark.parametrize("version", [None, "v18.20.4", "v20.18.3", "garbage"])
@pytest.mark.parametrize("ci", [True, False])
def test_no_usable_node_skips_here_and_fails_in_ci(
    version: str | None, ci: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if version is not None:
        fake_node(tmp_path, version)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", "true" if ci else "false")
    expected = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(expected) as outcome:
        require_node()
    assert ("CI must not skip" in str(outcome.value)) is ci


def test_a_recent_node_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_node(tmp_path, "v20.19.0")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    assert require_node() == (str(tmp_path / "node"), str(tmp_path / "npm"))
