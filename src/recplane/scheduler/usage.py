"""Usage accounting: ledger rows grouped into reports with costs, and the usage budgets queues may have.

Pure functions over ledger rows and prices; the scheduler reads the rows and writes them (one per attempt).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, get_args

from recplane.config import Settings
from recplane.errors import InvalidInput
from recplane.scheduler.records import UsageGroup, UsageReport, UsageRow
from recplane.scheduler.spec import BudgetSpec

__all__ = ["Prices", "budget_hold", "usage_report"]

_HOUR = 3600.0
GROUPS: tuple[str, ...] = get_args(UsageGroup)


@dataclass(frozen=True)
class Prices:
    """Price per CPU-hour, GPU-hour and memory GB-hour."""

    cpu_hour: float
    gpu_hour: float
    memory_gb_hour: float
    currency: str = "USD"

    @classmethod
    def of(cls, settings: Settings) -> Prices:
        """The prices configured in ``settings``."""
        return cls(settings.price_cpu_hour, settings.price_gpu_hour, settings.price_memory_gb_hour,
                   settings.price_currency)

    def cost(self, cpu_seconds: float, gpu_seconds: float, memory_gb_seconds: float) -> float:
        """What that much usage costs."""
        return (cpu_seconds * self.cpu_hour + gpu_seconds * self.gpu_hour
                + memory_gb_seconds * self.memory_gb_hour) / _HOUR

    def as_dict(self) -> dict[str, float]:
        """``{"cpu_hour", "gpu_hour", "memory_gb_hour"}``."""
        return {"cpu_hour": self.cpu_hour, "gpu_hour": self.gpu_hour, "memory_gb_hour": self.memory_gb_hour}


class _Sum:
    def __init__(self) -> None:
        self.jobs: set[str] = set()
        self.attempts = 0
        self.cpu = self.gpu = self.memory = self.wall = 0.0

    def add(self, row: Any) -> None:
        self.jobs.add(row.job_id)
        self.attempts += 1
        self.cpu += row.cpu_seconds
        self.gpu += row.gpu_seconds
        self.memory += row.memory_gb_seconds
        self.wall += row.wall_seconds

    def row(self, group: dict[str, str | None], prices: Prices) -> UsageRow:
        return UsageRow(
            group=group,
            jobs=len(self.jobs),
            attempts=self.attempts,
            cpu_hours=self.cpu / _HOUR,
            gpu_hours=self.gpu / _HOUR,
            memory_gb_hours=self.memory / _HOUR,
            wall_hours=self.wall / _HOUR,
            cost=round(prices.cost(self.cpu, self.gpu, self.memory), 6),
        )


def check_group_by(group_by: Iterable[str]) -> list[str]:
    """The grouping keys, validated (team, queue, kind, pipeline, job)."""
    keys = list(dict.fromkeys(group_by))
    unknown = [key for key in keys if key not in GROUPS]
    if unknown or not keys:
        raise InvalidInput(f"Group usage by one or more of {', '.join(GROUPS)}; got {keys or 'nothing'}.")
    return keys


def usage_report(
    rows: Sequence[Any], *, since: datetime, until: datetime, group_by: Iterable[str], prices: Prices
) -> UsageReport:
    """Ledger rows (job_id, team, queue, kind, pipeline, cpu/gpu/memory/wall seconds) summed per group, priced.
    Groups come most expensive first."""
    keys = check_group_by(group_by)
    sums: dict[tuple[str | None, ...], _Sum] = {}
    total = _Sum()
    for row in rows:
        key = tuple(row.job_id if name == "job" else getattr(row, name) for name in keys)
        sums.setdefault(key, _Sum()).add(row)
        total.add(row)
    report_rows = [sums[key].row(dict(zip(keys, key, strict=True)), prices) for key in sums]
    report_rows.sort(key=lambda r: (-r.cost, -r.cpu_hours, [str(v) for v in r.group.values()]))
    return UsageReport(
        since=since,
        until=until,
        group_by=keys,
        prices=prices.as_dict(),
        currency=prices.currency,
        rows=report_rows,
        total=total.row(dict.fromkeys(keys, "total"), prices),
    )


def budget_hold(queue: str, team: str, budget: BudgetSpec, used: dict[str, float], prices: Prices) -> str | None:
    """Why the queue's jobs wait when its window usage (``cpu_seconds``, ``gpu_seconds``, ``memory_gb_seconds``)
    passed a budget limit; None while within it."""
    hours = {
        "CPU-hour": (used["cpu_seconds"] / _HOUR, budget.cpu_hours),
        "GPU-hour": (used["gpu_seconds"] / _HOUR, budget.gpu_hours),
        "memory GB-hour": (used["memory_gb_seconds"] / _HOUR, budget.memory_gb_hours),
        f"{prices.currency} cost": (
            prices.cost(used["cpu_seconds"], used["gpu_seconds"], used["memory_gb_seconds"]), budget.cost),
    }
    for unit, (spent, limit) in hours.items():
        if limit is not None and spent >= limit:
            return (
                f"Team {team}'s queue {queue!r} used {spent:.3g} of its {limit:g} {unit} budget in the last "
                f"{budget.window}; its jobs wait until usage in that window falls below the budget (or the budget "
                "is raised with `recplane queues apply`)"
            )
    return None
