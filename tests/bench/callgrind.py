"""Instruction counts under ``valgrind --tool=callgrind``: deterministic where timings on a loaded machine are not."""

from __future__ import annotations

import subprocess
import sys


def instructions(valgrind: str, module: str, *args: str) -> int:
    """Instructions ``python -m module *args`` executes in all (start-up included: run it twice and subtract)."""
    command = [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-m", module, *args]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    for line in result.stderr.splitlines():
        if "Collected" in line:
            return int(line.rsplit(":", 1)[1].strip().replace(",", ""))
    raise RuntimeError(f"no instruction count in valgrind's output:\n{result.stderr}")
