"""CPU budgets (``tests.bench.budget``) against a directory laid out as a cgroup mount, and the rule by which the
budgeted scaling measurement counts its rounds (``tests.bench.throughput``). ``make bench-smoke`` caps real workers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.budget import PERIOD_US, CpuBudgets, cpu_budgets
from tests.bench.throughput import BudgetedScaling
from tests.bench.wrk import WrkResult


def test_cgroup_v2_caps_with_cpu_max(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("memory\n")
    budgets = cpu_budgets(tmp_path, name="bench")
    assert isinstance(budgets, CpuBudgets)
    assert budgets.version == 2
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+cpu"  # the controller enabled for children
    assert (tmp_path / "bench" / "cgroup.subtree_control").read_text() == "+cpu"
    budgets.cap(4242, "worker-0", 0.4)
    assert (tmp_path / "bench" / "worker-0" / "cpu.max").read_text() == f"{int(0.4 * PERIOD_US)} {PERIOD_US}"
    assert (tmp_path / "bench" / "worker-0" / "cgroup.procs").read_text() == "4242"


def test_cgroup_v1_caps_with_the_cfs_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    budgets = cpu_budgets(tmp_path, name="bench")
    assert isinstance(budgets, CpuBudgets)
    assert budgets.version == 1
    budgets.cap(4242, "worker-0", 0.25)
    group = tmp_path / "cpu" / "bench" / "worker-0"
    assert (group / "cpu.cfs_period_us").read_text() == str(PERIOD_US)
    assert (group / "cpu.cfs_quota_us").read_text() == str(PERIOD_US // 4)
    assert (group / "cgroup.procs").read_text() == "4242"


def test_close_gives_the_processes_back_and_removes_the_groups(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    budgets = cpu_budgets(tmp_path, name="bench")
    assert isinstance(budgets, CpuBudgets)
    budgets.cap(4242, "worker-0", 0.4)
    for name in ("cpu.cfs_period_us", "cpu.cfs_quota_us", "cgroup.procs"):  # a real cgroup has no such files
        (tmp_path / "cpu" / "bench" / "worker-0" / name).unlink()
    budgets.close()
    assert not (tmp_path / "cpu" / "bench").exists()


def test_without_a_cpu_controller_it_says_why(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("memory pids\n")
    assert cpu_budgets(tmp_path) == f"no cgroup CPU controller under {tmp_path}"


def test_without_write_access_it_says_why(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "bench").write_text("a file where the group would go")
    reason = cpu_budgets(tmp_path, name="bench")
    assert isinstance(reason, str)
    assert reason.startswith(f"cannot create a cgroup under {tmp_path}")


def result(requests: int) -> WrkResult:
    return WrkResult(requests=requests, seconds=10.0, p50=0.01, p99=0.02, non_2xx=0, socket_errors=0)


def test_only_rounds_in_which_every_cap_bound_count() -> None:
    scaling = BudgetedScaling(
        budget=0.4,
        rounds=[(result(10_000), result(19_000)), (result(10_000), result(30_000)), (result(10_000), result(18_000))],
        # The second round's 1-worker bff did not use its cap up: something else limited it, so it is left out.
        used=[[0.99, 0.98, 0.97], [0.6, 0.99, 0.99], [0.95, 0.99, 0.92]],
    )
    assert scaling.counted == [scaling.rounds[0], scaling.rounds[2]]
    assert scaling.ratio == pytest.approx(1.85)
    assert scaling.least_used == pytest.approx(0.92)
    assert BudgetedScaling(budget=0.4, rounds=scaling.rounds[1:2], used=scaling.used[1:2]).ratio is None
