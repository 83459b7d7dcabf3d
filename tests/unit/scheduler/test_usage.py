"""Usage reports from ledger rows (grouping, hours, cost by hand) and usage budgets."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from recplane.errors import InvalidInput
from recplane.scheduler.spec import BudgetSpec
from recplane.scheduler.store import UsageEntry
from recplane.scheduler.usage import Prices, budget_hold, usage_report

PRICES = Prices(cpu_hour=0.10, gpu_hour=2.0, memory_gb_hour=0.01)
NOW = datetime(2026, 11, 28, tzinfo=UTC)


def _row(job: str, team: str, kind: str, cpu: float, gpu: float = 0.0, memory: float = 0.0) -> UsageEntry:
    return UsageEntry(job, 1, team, f"{team}-q", kind, None, "succeeded", cpu, gpu, memory, 60.0, 1.0)


def test_rows_are_grouped_summed_and_priced_most_expensive_first() -> None:
    rows = [_row("j1", "a", "train", 3600, gpu=1800), _row("j1", "a", "train", 3600), _row("j2", "b", "custom", 7200,
                                                                                         memory=36000)]
    report = usage_report(rows, since=NOW, until=NOW, group_by=["team"], prices=PRICES)
    assert [row.group for row in report.rows] == [{"team": "a"}, {"team": "b"}]
    a, b = report.rows
    assert (a.jobs, a.attempts, a.cpu_hours, a.gpu_hours) == (1, 2, 2.0, 0.5)
    assert a.cost == pytest.approx(2 * 0.10 + 0.5 * 2.0)
    assert b.cost == pytest.approx(2 * 0.10 + 10 * 0.01)
    assert report.total.cost == pytest.approx(a.cost + b.cost) and report.total.jobs == 2


def test_grouping_by_several_keys_and_refusing_unknown_ones() -> None:
    rows = [_row("j1", "a", "train", 10), _row("j2", "a", "custom", 10)]
    report = usage_report(rows, since=NOW, until=NOW, group_by=["team", "kind"], prices=PRICES)
    assert sorted(str(row.group) for row in report.rows) == ["{'team': 'a', 'kind': 'custom'}",
                                                             "{'team': 'a', 'kind': 'train'}"]
    with pytest.raises(InvalidInput, match="team, queue, kind, pipeline, job"):
        usage_report(rows, since=NOW, until=NOW, group_by=["color"], prices=PRICES)


def test_a_budget_holds_once_any_limit_is_reached() -> None:
    used = {"cpu_seconds": 7200.0, "gpu_seconds": 0.0, "memory_gb_seconds": 0.0}
    assert budget_hold("q", "t", BudgetSpec(cpu_hours=3), used, PRICES) is None
    reason = budget_hold("q", "t", BudgetSpec(window="7d", cpu_hours=2), used, PRICES)
    assert reason is not None and reason.startswith("Team t's queue 'q' used 2 of its 2 CPU-hour budget in the last 7d")
    assert budget_hold("q", "t", BudgetSpec(cost=0.2), used, PRICES) is not None
