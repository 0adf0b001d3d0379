"""The instruction-count harness of the telemetry hooks (``tests.bench.hook_instructions``) runs every set."""

from __future__ import annotations

import json

import pytest

from bff.telemetry.exchange import Observers
from tests.bench import hook_instructions


@pytest.mark.parametrize("name", list(hook_instructions.SETS))
def test_every_observer_set_runs_a_request_through_its_hooks(name: str) -> None:
    hook_instructions._loop(name, 3)


def test_the_access_log_of_the_harness_formats_its_lines_and_keeps_nothing() -> None:
    log = hook_instructions._log()
    observers = Observers([log])
    scope = {"type": "http", "method": "GET", "path": "/a", "raw_path": b"/a", "headers": []}
    observers.end(observers.exchange(scope, "/api"))
    assert len(log._lines) == 1
    assert json.loads(log.render())["url.path"] == "/a"
    assert log._lines == []
