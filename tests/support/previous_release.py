"""The previous release of bff, from git history: the other half of the rolling-update tests.

``PREVIOUS_RELEASE`` is the main commit the store formats were added on: the code whose instances still run next to
this release's during a rolling update. CI runs on a full clone; a clone without that commit fails these tests with
a clear message instead of skipping them (they are the proof that an update keeps sessions).
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

PREVIOUS_RELEASE = "d548d3c"
REPO = Path(__file__).resolve().parents[2]


def _git(*args: str) -> bytes:
    done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.fail(
            f"commit {PREVIOUS_RELEASE} (the previous release) is not in this clone's history: the compatibility "
            f"tests need it (fetch the full history, e.g. `git fetch --unshallow`): "
            f"git {' '.join(args)}: {done.stderr.decode(errors='replace').strip()}"
        )
    return done.stdout


def previous_release_file(path: str) -> str:
    """One file of the previous release."""
    return _git("show", f"{PREVIOUS_RELEASE}:{path}").decode("utf-8")


def extract_previous_release(into: Path) -> Path:
    """The previous release's ``bff`` package extracted under ``into`` (``git archive``); returns ``into``, the
    directory to put on ``PYTHONPATH`` (and to run from, so that this tree's ``bff`` is not found first)."""
    archive = _git("archive", "--format=tar", PREVIOUS_RELEASE, "bff")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into
