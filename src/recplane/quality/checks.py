"""Evaluating quality rules on one dataset version: DuckDB queries over the version's Arrow data.

The version's rows are registered in an in-process DuckDB connection as an Arrow dataset, so each rule is
one or two aggregate queries that stream the columns they need; only counts and at most five example
values per rule come back into Python. Drift reads the one column it compares from both versions as Arrow
arrays. Row-count anomalies come from the Delta commit log (rows added per commit), not from the data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from pydantic import BaseModel, Field

from recplane.lake.spec import DatasetSpec
from recplane.quality.drift import ks_statistic, psi_bins
from recplane.quality.rules import (
    AllowedValuesRule,
    DriftRule,
    FreshnessRule,
    NotNullRule,
    RangeRule,
    RowCountAnomalyRule,
    Rule,
    Severity,
    UniqueRule,
)

__all__ = ["Commit", "ReadVersion", "RuleResult", "commits_from_history", "evaluate"]

MAX_EXAMPLES = 5
ReadVersion = Callable[[int], pads.Dataset | pa.Table]
"""Returns the rows of a dataset version (an Arrow dataset streams; a table is fine for small data)."""


class RuleResult(BaseModel):
    """The outcome of one rule on one version."""

    name: str = Field(description="The rule's name (given in the spec, or derived from kind and columns).")
    rule: str = Field(description="The rule kind: not_null, range, allowed_values, unique, freshness, ...")
    severity: Severity = Field(description="blocking rules fail the report; warning rules only report.")
    passed: bool
    observed: dict[str, float | int | None] = Field(
        default_factory=dict, description="The measured numbers behind the verdict."
    )
    message: str = Field(description="What was found, in plain words.")
    examples: list[Any] = Field(default_factory=list, description="Up to 5 offending values, keys or rows.")


@dataclass(frozen=True)
class Commit:
    """One Delta commit as row-count rules see it."""

    version: int
    operation: str
    rows_added: int | None
    appends: bool
    """True when the commit only added rows (an append or an insert-only merge)."""


def commits_from_history(history: Sequence[Mapping[str, Any]]) -> list[Commit]:
    """Commits, oldest first, from Delta history entries (``DeltaDataset.history()``)."""
    commits = [_commit(entry) for entry in history]
    return sorted(commits, key=lambda commit: commit.version)


def _commit(entry: Mapping[str, Any]) -> Commit:
    metrics = dict(entry.get("operationMetrics") or {})
    if isinstance(entry.get("recplane.rows_added"), int):
        # recplane's own count wins over Delta's metrics (a rewrite adds files but no new rows).
        metrics["num_added_rows"] = metrics["num_target_rows_inserted"] = entry["recplane.rows_added"]
    delta_operation = str(entry.get("operation", "")).upper()
    mode = str((entry.get("operationParameters") or {}).get("mode", "")).lower()
    operation = str(entry.get("recplane.operation") or delta_operation.lower())
    if delta_operation == "WRITE" and mode == "append":
        return Commit(int(entry["version"]), operation, _int(metrics.get("num_added_rows")), True)
    if delta_operation == "MERGE":
        inserted = _int(metrics.get("num_target_rows_inserted"))
        changed = (_int(metrics.get("num_target_rows_updated")) or 0) + (
            _int(metrics.get("num_target_rows_deleted")) or 0
        )
        return Commit(int(entry["version"]), operation, inserted, changed == 0)
    return Commit(int(entry["version"]), operation, _int(metrics.get("num_added_rows")), False)


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float | str) and str(value).lstrip("-").isdigit() else None


def evaluate(
    rules: Sequence[Rule],
    *,
    spec: DatasetSpec,
    version: int,
    read: ReadVersion,
    commits: Sequence[Commit] = (),
    reference_version: int | None = None,
    now: datetime | None = None,
) -> list[RuleResult]:
    """Evaluate ``rules`` on ``version``; ``reference_version`` overrides every drift rule's reference."""
    if not rules:
        return []
    data = read(version)
    rows = data.count_rows() if isinstance(data, pads.Dataset) else data.num_rows
    with duckdb.connect() as connection:
        connection.register("current", data)
        context = _Context(
            connection=connection,
            spec=spec,
            version=version,
            data=data,
            rows=rows,
            read=read,
            commits=tuple(commits),
            reference_version=reference_version,
            now=_utc(now or datetime.now(UTC)),
        )
        return [_evaluate_one(rule, context) for rule in rules]


@dataclass(frozen=True)
class _Context:
    connection: duckdb.DuckDBPyConnection
    spec: DatasetSpec
    version: int
    data: pads.Dataset | pa.Table
    rows: int
    read: ReadVersion
    commits: tuple[Commit, ...]
    reference_version: int | None
    now: datetime

    @property
    def present(self) -> set[str]:
        return set(self.data.schema.names)

    def one(self, sql: str, parameters: dict[str, Any] | None = None) -> tuple[Any, ...]:
        (row,) = self.connection.execute(sql, parameters or {}).fetchall()  # aggregates give exactly one row
        return tuple(row)

    def records(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        # Through Arrow: DuckDB's own conversion of timestamps with a time zone needs pytz.
        result: list[dict[str, Any]] = (
            self.connection.sql(sql, params=parameters or None).to_arrow_table().to_pylist()
        )
        return result

    def is_float(self, column: str) -> bool:
        return bool(pa.types.is_floating(self.data.schema.field(column).type))


def _evaluate_one(rule: Rule, context: _Context) -> RuleResult:
    needed = rule.referenced_columns() + (
        [context.spec.event_time or ""] if isinstance(rule, FreshnessRule) else []
    )
    missing = [column for column in needed if column not in context.present]
    if missing:
        return _result(
            rule,
            False,
            {"rows": context.rows},
            f"Column(s) {missing} are not in version {context.version} (added to the schema later?), "
            "so this rule cannot be checked on it.",
        )
    evaluator = _EVALUATORS[type(rule)]
    return evaluator(rule, context)


def _result(
    rule: Rule, passed: bool, observed: dict[str, Any], message: str, examples: Sequence[Any] = ()
) -> RuleResult:
    return RuleResult(
        name=rule.name,
        rule=rule.rule,
        severity=rule.severity,
        passed=passed,
        observed={key: _number(value) for key, value in observed.items()},
        message=message,
        examples=[_jsonable(example) for example in examples[:MAX_EXAMPLES]],
    )


def _check_not_null(rule: NotNullRule, context: _Context) -> RuleResult:
    counts = ", ".join(
        f"count(*) FILTER (WHERE {_missing(column, context)}) AS {_q('n_' + column)}"
        for column in rule.columns
    )
    nulls = dict(zip(rule.columns, context.one(f"SELECT {counts} FROM current"), strict=True))
    rows = context.rows
    rate = {column: (nulls[column] / rows if rows else 0.0) for column in rule.columns}
    failing = [column for column in rule.columns if rate[column] > rule.max_null_rate]
    observed: dict[str, Any] = {"rows": rows}
    for column in rule.columns:
        observed[f"{column}.nulls"] = nulls[column]
        observed[f"{column}.null_rate"] = rate[column]
    allowed = _pct(rule.max_null_rate)
    if not failing:
        with_nulls = [column for column in rule.columns if nulls[column]]
        message = (
            f"No nulls in {', '.join(rule.columns)} ({rows} rows)."
            if not with_nulls
            else "; ".join(
                f"{nulls[c]} of {rows} rows ({_pct(rate[c])}) have null {c}, within the allowed {allowed}"
                for c in with_nulls
            )
            + "."
        )
        return _result(rule, True, observed, message)
    message = "; ".join(
        f"{nulls[c]} of {rows} rows ({_pct(rate[c])}) have null {c}; allowed {allowed}" for c in failing
    )
    where = " OR ".join(_missing(column, context) for column in failing)
    shown = _context_columns(rule.columns, context)
    examples = context.records(f"SELECT {_columns(shown)} FROM current WHERE {where} LIMIT {MAX_EXAMPLES}")
    return _result(rule, False, observed, message + ".", examples)


def _check_range(rule: RangeRule, context: _Context) -> RuleResult:
    column = _q(rule.column)
    valid = f"{column} IS NOT NULL" + (f" AND NOT isnan({column})" if context.is_float(rule.column) else "")
    nan = f"isnan({column})" if context.is_float(rule.column) else "false"
    below = f"{column} < $min" if rule.min is not None else "false"
    above = f"{column} > $max" if rule.max is not None else "false"
    parameters = {key: value for key, value in (("min", rule.min), ("max", rule.max)) if value is not None}
    n_values, n_below, n_above, n_nan, low, high = context.one(
        f"SELECT count(*) FILTER (WHERE {valid}), count(*) FILTER (WHERE {valid} AND {below}), "
        f"count(*) FILTER (WHERE {valid} AND {above}), count(*) FILTER (WHERE {nan}), "
        f"min({column}) FILTER (WHERE {valid}), max({column}) FILTER (WHERE {valid}) FROM current",
        parameters,
    )
    bad = n_below + n_above + n_nan
    observed = {
        "rows": context.rows,
        "values": n_values + n_nan,
        "out_of_range": bad,
        "below_min": n_below,
        "above_max": n_above,
        "nan": n_nan,
        "min": low,
        "max": high,
    }
    span = f" (observed {_fmt(low)} to {_fmt(high)})" if n_values else ""
    checked = n_values + n_nan
    if not bad:
        return _result(
            rule, True, observed, f"All {checked} non-null {rule.column} values are {_bounds(rule)}{span}."
        )
    parts = [
        f"{n} {label}"
        for n, label in (
            (n_below, f"below {_fmt(rule.min)}"),
            (n_above, f"above {_fmt(rule.max)}"),
            (n_nan, "NaN"),
        )
        if n
    ]
    message = (
        f"{bad} of {checked} non-null values ({_pct(bad / checked)}) of {rule.column} are not "
        f"{_bounds(rule)}: {', '.join(parts)}{span}."
    )
    examples = context.records(
        f"SELECT {column} AS value, count(*) AS rows FROM current WHERE {column} IS NOT NULL AND "
        f"({below} OR {above} OR {nan}) GROUP BY ALL ORDER BY rows DESC, value LIMIT {MAX_EXAMPLES}",
        parameters,
    )
    return _result(rule, False, observed, message, examples)


def _check_allowed_values(rule: AllowedValuesRule, context: _Context) -> RuleResult:
    column = _q(rule.column)
    outside = f"{column} IS NOT NULL AND NOT list_contains($allowed, {column})"
    parameters = {"allowed": list(rule.values)}
    n_values, n_bad, n_distinct = context.one(
        f"SELECT count({column}), count(*) FILTER (WHERE {outside}), "
        f"count(DISTINCT {column}) FILTER (WHERE {outside}) FROM current",
        parameters,
    )
    observed = {
        "rows": context.rows,
        "values": n_values,
        "disallowed": n_bad,
        "distinct_disallowed": n_distinct,
    }
    allowed = ", ".join(_fmt(value) for value in rule.values)
    if not n_bad:
        return _result(
            rule, True, observed, f"All {n_values} non-null {rule.column} values are in [{allowed}]."
        )
    examples = context.records(
        f"SELECT {column} AS value, count(*) AS rows FROM current WHERE {outside} "
        f"GROUP BY ALL ORDER BY rows DESC, value LIMIT {MAX_EXAMPLES}",
        parameters,
    )
    shown = ", ".join(_fmt(example["value"]) for example in examples)
    message = (
        f"{n_bad} of {n_values} non-null values ({_pct(n_bad / n_values)}) of {rule.column} are not in "
        f"[{allowed}]; {n_distinct} distinct value(s) outside the list, the most common: {shown}."
    )
    return _result(rule, False, observed, message, examples)


def _check_unique(rule: UniqueRule, context: _Context) -> RuleResult:
    key = _columns(rule.columns)
    n_keys, n_duplicates, most = context.one(
        f"SELECT count(*), coalesce(sum(n - 1), 0), coalesce(max(n), 0) FROM "
        f"(SELECT count(*) AS n FROM current GROUP BY {key} HAVING count(*) > 1)"
    )
    observed = {"rows": context.rows, "duplicate_rows": n_duplicates, "duplicated_keys": n_keys}
    label = f"({', '.join(rule.columns)})"
    if not n_duplicates:
        return _result(rule, True, observed, f"All {context.rows} rows have a distinct {label}.")
    duplicates = context.records(
        f"SELECT {key}, count(*) AS __rows FROM current GROUP BY {key} HAVING count(*) > 1 "
        f"ORDER BY __rows DESC, {key} LIMIT {MAX_EXAMPLES}"
    )
    examples = [{"key": {c: row[c] for c in rule.columns}, "rows": row["__rows"]} for row in duplicates]
    message = (
        f"{n_duplicates} of {context.rows} rows ({_pct(n_duplicates / context.rows)}) repeat the {label} of "
        f"an earlier row: {n_keys} key(s) appear more than once, the most frequent {most} times; allowed 0."
    )
    return _result(rule, False, observed, message, examples)


def _check_freshness(rule: FreshnessRule, context: _Context) -> RuleResult:
    column = context.spec.event_time or ""
    (newest_us,) = context.one(f"SELECT epoch_us(max({_q(column)})) FROM current")
    limit = rule.max_age_delta
    observed: dict[str, Any] = {"max_age_seconds": limit.total_seconds()}
    if newest_us is None:
        return _result(
            rule,
            False,
            observed,
            f"Version {context.version} has no rows with a {column}, so it cannot be fresh.",
        )
    newest = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(newest_us))
    age = context.now - newest
    observed.update({"newest_epoch_seconds": newest.timestamp(), "age_seconds": age.total_seconds()})
    when = f"The newest {column} is {newest.isoformat()}"
    if age <= limit:
        ago = f"{_duration(age)} ago" if age >= timedelta(0) else f"{_duration(-age)} in the future"
        return _result(rule, True, observed, f"{when}, {ago}; allowed {_duration(limit)}.")
    return _result(rule, False, observed, f"{when}, {_duration(age)} old; allowed {_duration(limit)}.")


def _check_row_count(rule: RowCountAnomalyRule, context: _Context) -> RuleResult:
    observed: dict[str, Any] = {"rows": context.rows}
    verdicts = [_row_bounds(rule, context.rows), _rows_added_z(rule, context, observed)]
    passed = all(ok for ok, _ in verdicts)
    return _result(rule, passed, observed, " ".join(sentence for _, sentence in verdicts if sentence))


def _row_bounds(rule: RowCountAnomalyRule, rows: int) -> tuple[bool, str]:
    if rule.min_rows is not None and rows < rule.min_rows:
        return False, f"The version has {rows} rows; at least {rule.min_rows} required."
    if rule.max_rows is not None and rows > rule.max_rows:
        return False, f"The version has {rows} rows; at most {rule.max_rows} allowed."
    return True, ""


def _rows_added_z(rule: RowCountAnomalyRule, context: _Context, observed: dict[str, Any]) -> tuple[bool, str]:
    this = next((commit for commit in context.commits if commit.version == context.version), None)
    if this is None or not this.appends or this.rows_added is None:
        kind = this.operation if this is not None else "unknown commit"
        return True, (
            f"Version {context.version} ({kind}) is not an append, so its added rows were not "
            "compared with earlier appends."
        )
    observed["rows_added"] = this.rows_added
    earlier = [
        c.rows_added
        for c in context.commits
        if c.appends and c.rows_added is not None and c.version < context.version
    ][-rule.window :]
    if len(earlier) < 2:
        return True, (
            f"Version {context.version} added {this.rows_added} rows; {len(earlier)} earlier "
            "append(s) are too few to judge (at least 2 needed)."
        )
    mean = float(np.mean(earlier))
    std = float(np.std(earlier, ddof=1))
    # A window of identical commit sizes has std 0; floor it at Poisson noise so one row more is not an alarm.
    sigma = max(std, math.sqrt(mean), 1.0)
    z = (this.rows_added - mean) / sigma
    observed.update({"window": len(earlier), "mean": mean, "std": std, "z": z, "z_limit": rule.z})
    summary = (
        f"Version {context.version} added {this.rows_added} rows; the last {len(earlier)} appends added "
        f"{_count(mean)} ± {_count(std)} (z = {z:.2f}, limit ±{rule.z:g})"
    )
    if abs(z) > rule.z:
        return False, summary + ": an anomaly."
    return True, summary + "."


def _check_drift(rule: DriftRule, context: _Context) -> RuleResult:
    reference = _first_set(context.reference_version, rule.reference_version, context.version - 1)
    observed: dict[str, Any] = {"threshold": rule.limit, "reference_version": reference}
    if reference < 0:
        return _result(
            rule,
            True,
            observed,
            f"Version {context.version} has no earlier version to compare "
            "with; set reference_version to measure drift.",
        )
    try:
        reference_values = _column(context.read(reference), rule.column)
    except Exception as exc:  # a vacuumed or missing version is reported in the result, not raised
        return _result(rule, False, observed, f"Cannot read reference version {reference}: {exc}")
    current_values = _column(context.data, rule.column)
    n_reference, n_current = _valid_count(reference_values), _valid_count(current_values)
    observed.update({"reference_values": n_reference, "current_values": n_current})
    if not (n_reference and n_current):
        return _result(
            rule,
            True,
            observed,
            f"Drift of {rule.column} not measured: reference version "
            f"{reference} has {n_reference} and version {context.version} has {n_current} non-null values.",
        )
    versions = (
        f"version {reference} ({n_reference} values) and version {context.version} ({n_current} values)"
    )
    if rule.method == "ks":
        statistic, p_value = ks_statistic(reference_values, current_values)
        observed.update({"value": statistic, "statistic": statistic, "p_value": p_value})
        verdict = f"KS statistic of {rule.column} between {versions} is {statistic:.4g} (p = {p_value:.3g})"
        return _drift_result(rule, statistic, observed, verdict, [])
    breakdown = psi_bins(reference_values, current_values, rule.bins)
    observed["value"] = breakdown.value
    order = np.argsort(-breakdown.contribution, kind="stable")[:MAX_EXAMPLES]
    examples = [
        {
            "bin": breakdown.labels[i],
            "reference_share": round(float(breakdown.reference_share[i]), 6),
            "current_share": round(float(breakdown.current_share[i]), 6),
            "psi": round(float(breakdown.contribution[i]), 6),
        }
        for i in order
        if breakdown.contribution[i] > 0
    ]
    verdict = f"PSI of {rule.column} between {versions} is {breakdown.value:.4g}"
    return _drift_result(rule, breakdown.value, observed, verdict, examples)


def _drift_result(
    rule: DriftRule, value: float, observed: dict[str, Any], verdict: str, examples: list[Any]
) -> RuleResult:
    if value > rule.limit:
        return _result(rule, False, observed, f"{verdict}; above the threshold {rule.limit:g}.", examples)
    return _result(rule, True, observed, f"{verdict}; within the threshold {rule.limit:g}.", examples)


_EVALUATORS: dict[type, Callable[[Any, _Context], RuleResult]] = {
    NotNullRule: _check_not_null,
    RangeRule: _check_range,
    AllowedValuesRule: _check_allowed_values,
    UniqueRule: _check_unique,
    FreshnessRule: _check_freshness,
    RowCountAnomalyRule: _check_row_count,
    DriftRule: _check_drift,
}


def _first_set(*candidates: int | None) -> int:
    return next(candidate for candidate in candidates if candidate is not None)


def _column(data: pads.Dataset | pa.Table, column: str) -> pa.ChunkedArray:
    if isinstance(data, pads.Dataset):
        return data.to_table(columns=[column]).column(column)
    return data.column(column)


def _valid_count(values: pa.ChunkedArray) -> int:
    valid = values.length() - values.null_count
    if pa.types.is_floating(values.type):
        valid -= pc.sum(pc.is_nan(values)).as_py() or 0
    return int(valid)


def _q(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _columns(names: Sequence[str]) -> str:
    return ", ".join(_q(name) for name in names)


def _missing(column: str, context: _Context) -> str:
    if context.is_float(column):
        return f"({_q(column)} IS NULL OR isnan({_q(column)}))"
    return f"{_q(column)} IS NULL"


def _context_columns(columns: Sequence[str], context: _Context) -> list[str]:
    """The rule's columns plus the dataset's key and event time, to make example rows recognisable."""
    wanted = [
        *context.spec.dedup_key,
        *([context.spec.event_time] if context.spec.event_time else []),
        *columns,
    ]
    return [name for name in dict.fromkeys(wanted) if name in context.present]


def _bounds(rule: RangeRule) -> str:
    if rule.min is not None and rule.max is not None:
        return f"within [{_fmt(rule.min)}, {_fmt(rule.max)}]"
    return f"≥ {_fmt(rule.min)}" if rule.min is not None else f"≤ {_fmt(rule.max)}"


def _count(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def _pct(rate: float) -> str:
    return f"{rate * 100:.3g}%"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")) if n]
    return " ".join(parts[:2]) or "0s"


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _number(value: Any) -> float | int | None:
    if value is None or isinstance(value, bool):
        return None if value is None else int(value)
    if isinstance(value, int):
        return value
    number = float(value)
    return number if math.isfinite(number) else None


def _jsonable(value: Any) -> Any:
    """A JSON-safe copy of an example (datetimes as ISO text, bytes as hex, NaN as None)."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    return value
