"""Instruction counts under ``valgrind --tool=callgrind``: deterministic where timings on a loaded machine are not."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence


def instructions(valgrind: str, module: str, *args: str) -> int:
    """Instructions ``python -m module *args`` executes in all (start-up included: run it twice and subtract)."""
    command = [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-m", module, *args]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    for line in result.stderr.splitlines():
        if "Collected" in line:
            return int(line.rsplit(":", 1)[1].strip().replace(",", ""))
    raise RuntimeError(f"no instruction count in valgrind's output:\n{result.stderr}")


def per_request(
    argv: Sequence[str], module: str, loop: Callable[[str, int], None], names: Sequence[str], low: int, high: int
) -> dict[str, float]:
    """The command line of the instruction-count tool ``python -m module``. Under valgrind it is called with
    ``--loop NAME N``: it runs ``loop(NAME, N)`` (N requests of the variant NAME) and returns nothing. Otherwise, for
    each of ``names``, it runs that under valgrind ``high`` and ``low`` times, prints and returns the difference per
    request (start-up cancelled out). Exits 2 without valgrind."""
    if argv[:1] == ["--loop"]:
        loop(argv[1], int(argv[2]))
        return {}
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        sys.stderr.write(f"{module}: needs valgrind (sudo apt-get install -y valgrind)\n")
        raise SystemExit(2)
    counts = {}
    for name in names:
        high_count, low_count = (instructions(valgrind, module, "--loop", name, str(n)) for n in (high, low))
        counts[name] = (high_count - low_count) / (high - low)
        sys.stdout.write(f"{name:<20} {counts[name]:>8,.0f} instructions per request\n")
        sys.stdout.flush()
    return counts
