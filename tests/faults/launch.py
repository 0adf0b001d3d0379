"""``python -m tests.faults.launch LOOP serve --config FILE``: ``bff serve`` on the event loop named (``asyncio`` or
``uvloop``). ``bff serve`` picks uvloop whenever it is installed and has no option to choose; the fault suite runs
both, so this launcher overrides that one choice and runs the real CLI otherwise unchanged."""

from __future__ import annotations

import sys
from typing import Any

from bff import serving
from bff.cli import main
from bff.config import ServerSettings

LOOPS = ("asyncio", "uvloop")


def run(argv: list[str]) -> int:
    loop, rest = argv[0], argv[1:]
    if loop not in LOOPS:
        sys.stderr.write(f"usage: python -m tests.faults.launch {{{','.join(LOOPS)}}} serve --config FILE\n")
        return 2
    chosen = serving.uvicorn_settings

    def uvicorn_settings(server: ServerSettings) -> dict[str, Any]:
        return {**chosen(server), "loop": loop}

    serving.uvicorn_settings = uvicorn_settings
    return main(rest)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
