"""Cron schedules: the five-field form (``minute hour day-of-month month day-of-week``) and ``@daily``-style names.

Fields take ``*``, numbers, ranges (``1-5``), steps (``*/15``, ``0-30/10``), lists (``1,15``) and names
(``jan``..``dec``, ``sun``..``sat``; Sunday is 0 or 7). As in Vixie cron, when both day fields are restricted a
day matches either. Times are UTC. Pure functions: the pipeline runner asks :meth:`CronSchedule.next_after`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from recplane.errors import InvalidSpec

__all__ = ["CronSchedule", "parse_cron"]

_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {name: number for number, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}
_DAYS = {name: number for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}), ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
_SEARCH_DAYS = 366 * 9  # Feb 29 can be eight years away (2096 → 2104); anything valid fires by then


@dataclass(frozen=True)
class CronSchedule:
    """A parsed cron expression: the allowed values of each field."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    days_restricted: bool
    weekdays_restricted: bool

    def matches_day(self, moment: datetime) -> bool:
        """Whether the schedule fires on ``moment``'s date (both day fields restricted: either may match)."""
        day_ok = moment.day in self.days
        weekday_ok = (moment.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return day_ok or weekday_ok
        return day_ok and weekday_ok

    def next_after(self, moment: datetime) -> datetime:
        """The first firing time strictly after ``moment`` (UTC; naive times are taken as UTC)."""
        current = _utc(moment).replace(second=0, microsecond=0) + timedelta(minutes=1)
        limit = current + timedelta(days=_SEARCH_DAYS)
        while current <= limit:
            if current.month not in self.months:
                current = _first_of_next_month(current)
            elif not self.matches_day(current):
                current = (current + timedelta(days=1)).replace(hour=0, minute=0)
            elif current.hour not in self.hours:
                current = (current + timedelta(hours=1)).replace(minute=0)
            elif current.minute not in self.minutes:
                current += timedelta(minutes=1)
            else:
                return current
        raise InvalidSpec(f"Cron expression {self.expression!r} never fires.")

    def latest_due(self, after: datetime, now: datetime) -> datetime | None:
        """The newest firing time in ``(after, now]`` — missed slots collapse into one run — or None."""
        due = None
        slot = self.next_after(after)
        while slot <= _utc(now):
            due = slot
            slot = self.next_after(slot)
        return due


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _first_of_next_month(moment: datetime) -> datetime:
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return moment.replace(year=year, month=month, day=1, hour=0, minute=0)


def _number(text: str, names: dict[str, int], field: str, expression: str) -> int:
    lowered = text.lower()
    if lowered in names:
        return names[lowered]
    if not lowered.isdigit():
        raise InvalidSpec(f"Cron expression {expression!r}: {text!r} is not a number or name in the {field} field.")
    return int(lowered)


def _field(text: str, field: str, low: int, high: int, names: dict[str, int], expression: str) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = _number(step_text, {}, field, expression) if step_text else 1
        if step < 1:
            raise InvalidSpec(f"Cron expression {expression!r}: the step in {part!r} must be at least 1.")
        if body == "*":
            start, end = low, high
        elif "-" in body:
            first, _, last = body.partition("-")
            start, end = _number(first, names, field, expression), _number(last, names, field, expression)
        else:
            start = _number(body, names, field, expression)
            end = high if step_text else start
        if not low <= start <= end <= high:
            raise InvalidSpec(
                f"Cron expression {expression!r}: {part!r} is outside {low}-{high} in the {field} field."
            )
        values.update(range(start, end + 1, step))
    return values


def parse_cron(expression: str) -> CronSchedule:
    """Parse ``expression``; InvalidSpec says which field is wrong."""
    text = _ALIASES.get(expression.strip().lower(), expression.strip())
    parts = text.split()
    if len(parts) != 5:
        raise InvalidSpec(
            f"Cron expression {expression!r} needs five fields (minute hour day-of-month month day-of-week), "
            "e.g. '0 3 * * *' for 03:00 UTC daily, or @hourly/@daily/@weekly/@monthly."
        )
    fields = [_field(part, name, low, high, names, expression)
              for part, (name, low, high, names) in zip(parts, _FIELDS, strict=True)]
    weekdays = {0 if day == 7 else day for day in fields[4]}
    schedule = CronSchedule(
        expression=expression,
        minutes=frozenset(fields[0]),
        hours=frozenset(fields[1]),
        days=frozenset(fields[2]),
        months=frozenset(fields[3]),
        weekdays=frozenset(weekdays),
        days_restricted=parts[2] != "*",
        weekdays_restricted=parts[4] != "*",
    )
    schedule.next_after(datetime(2000, 1, 1, tzinfo=UTC))  # "0 0 31 2 *" parses but never fires: say so now
    return schedule
