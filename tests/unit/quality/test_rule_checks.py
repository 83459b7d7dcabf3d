"""Each rule kind passing and failing on small Delta datasets: the numbers, words and examples it gives."""

from __future__ import annotations

import json
import math
from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from tests.fixtures.quality import T0, QualityLake, events

from recplane.auth import ADMIN
from recplane.lake import load_spec
from recplane.quality import RuleResult, parse_rules
from recplane.quality.checks import commits_from_history, evaluate


def only_result(
    lake: QualityLake, rules: list[dict[str, Any]], *batches: list[dict[str, Any]], **options: Any
) -> RuleResult:
    name = lake.create(rules)
    for rows in batches:
        lake.append(name, rows)
    report = lake.check(name, **options)
    (result,) = report.results
    json.dumps(result.model_dump(mode="json"), allow_nan=False)  # every result is plain JSON
    return result


def test_not_null_passes_when_no_value_is_missing(lake: QualityLake) -> None:
    result = only_result(lake, [{"rule": "not_null", "columns": ["user_id", "item_id"]}], events(20))
    assert result.passed
    assert result.observed["user_id.nulls"] == 0 and result.observed["rows"] == 20
    assert result.message == "No nulls in user_id, item_id (20 rows)."


def test_not_null_fails_with_counts_rate_and_example_rows(lake: QualityLake) -> None:
    rows = events(1000, user_id=[None if i < 3 else i for i in range(1000)])
    result = only_result(lake, [{"rule": "not_null", "columns": ["user_id", "item_id"]}], rows)
    assert not result.passed
    assert result.message == "3 of 1000 rows (0.3%) have null user_id; allowed 0%."
    assert result.observed["user_id.nulls"] == 3 and result.observed["user_id.null_rate"] == 0.003
    assert len(result.examples) == 3
    assert all(example["user_id"] is None and "ts" in example for example in result.examples)


def test_not_null_tolerates_up_to_max_null_rate(lake: QualityLake) -> None:
    rows = events(100, item_id=[None if i < 2 else i for i in range(100)])
    result = only_result(lake, [{"rule": "not_null", "columns": ["item_id"], "max_null_rate": 0.02}], rows)
    assert result.passed
    assert result.message == "2 of 100 rows (2%) have null item_id, within the allowed 2%."


def test_not_null_counts_nan_as_missing(lake: QualityLake) -> None:
    rows = events(4, rating=[1.0, math.nan, None, 2.0])
    result = only_result(lake, [{"rule": "not_null", "columns": ["rating"]}], rows)
    assert not result.passed and result.observed["rating.nulls"] == 2


def test_range_passes_within_bounds(lake: QualityLake) -> None:
    result = only_result(lake, [{"rule": "range", "column": "rating", "min": 1, "max": 5}], events(50))
    assert result.passed
    assert result.message == "All 50 non-null rating values are within [1, 5] (observed 1 to 5)."


def test_range_fails_naming_values_below_and_above(lake: QualityLake) -> None:
    ratings = [0.0, 7.0, 7.0, 9.5, None] + [3.0] * 95
    result = only_result(
        lake, [{"rule": "range", "column": "rating", "min": 1, "max": 5}], events(100, rating=ratings)
    )
    assert not result.passed
    assert result.observed["below_min"] == 1 and result.observed["above_max"] == 3
    assert result.message == (
        "4 of 99 non-null values (4.04%) of rating are not within [1, 5]: "
        "1 below 1, 3 above 5 (observed 0 to 9.5)."
    )
    assert result.examples == [
        {"value": 7.0, "rows": 2},
        {"value": 0.0, "rows": 1},
        {"value": 9.5, "rows": 1},
    ]


def test_range_with_one_bound_and_nan_counted_as_outside(lake: QualityLake) -> None:
    result = only_result(
        lake, [{"rule": "range", "column": "rating", "min": 0}], events(3, rating=[1.0, math.nan, 2.0])
    )
    assert not result.passed
    assert result.observed["nan"] == 1
    assert "are not ≥ 0: 1 NaN" in result.message


def test_allowed_values_passes_when_every_value_is_listed(lake: QualityLake) -> None:
    rule = {"rule": "allowed_values", "column": "event_type", "values": ["view", "click", "purchase"]}
    result = only_result(lake, [rule], events(30, event_type=[None] + ["view"] * 29))
    assert result.passed and result.observed["values"] == 29


def test_allowed_values_fails_listing_the_most_common_strangers(lake: QualityLake) -> None:
    kinds = ["view"] * 90 + ["like"] * 7 + ["share"] * 3
    rule = {"rule": "allowed_values", "column": "event_type", "values": ["view", "click", "purchase"]}
    result = only_result(lake, [rule], events(100, event_type=kinds))
    assert not result.passed
    assert result.observed["disallowed"] == 10 and result.observed["distinct_disallowed"] == 2
    assert result.examples == [{"value": "like", "rows": 7}, {"value": "share", "rows": 3}]
    assert (
        "10 of 100 non-null values (10%) of event_type are not in ['view', 'click', 'purchase']"
        in result.message
    )


def test_allowed_values_on_an_integer_column(lake: QualityLake) -> None:
    rule = {"rule": "allowed_values", "column": "item_id", "values": [100, 101, 102]}
    result = only_result(lake, [rule], events(7))
    assert not result.passed and result.observed["disallowed"] == 4


def test_unique_passes_on_distinct_keys(lake: QualityLake) -> None:
    result = only_result(lake, [{"rule": "unique", "columns": ["user_id", "ts"]}], events(40))
    assert result.passed and result.message == "All 40 rows have a distinct (user_id, ts)."


def test_unique_fails_counting_duplicate_rows_and_keys(lake: QualityLake) -> None:
    name = lake.create([{"rule": "unique", "columns": ["user_id", "ts"]}])
    lake.append(name, events(10))
    lake.append(name, events(3))  # the first three rows again
    lake.append(name, events(1))  # and the very first once more
    (result,) = lake.check(name).results
    assert not result.passed
    assert result.observed == {"rows": 14, "duplicate_rows": 4, "duplicated_keys": 3}
    assert result.examples[0] == {"key": {"user_id": 0, "ts": T0.isoformat()}, "rows": 3}
    assert "4 of 14 rows (28.6%) repeat the (user_id, ts) of an earlier row" in result.message


def test_freshness_passes_when_the_newest_event_is_recent(lake: QualityLake) -> None:
    newest = T0 + timedelta(minutes=9)
    result = only_result(
        lake, [{"rule": "freshness", "max_age": "2h"}], events(10), now=newest + timedelta(minutes=30)
    )
    assert result.passed
    assert result.observed["age_seconds"] == 1800
    assert result.message == f"The newest ts is {newest.isoformat()}, 30m ago; allowed 2h."


def test_freshness_fails_when_the_newest_event_is_too_old(lake: QualityLake) -> None:
    newest = T0 + timedelta(minutes=9)
    result = only_result(
        lake, [{"rule": "freshness", "max_age": "2h"}], events(10), now=newest + timedelta(hours=5, minutes=3)
    )
    assert not result.passed
    assert result.message == f"The newest ts is {newest.isoformat()}, 5h 3m old; allowed 2h."


def test_freshness_fails_on_a_dataset_without_rows(lake: QualityLake) -> None:
    result = only_result(lake, [{"rule": "freshness", "max_age": "2h"}])
    assert not result.passed and "no rows with a ts" in result.message


def _appends(lake: QualityLake, sizes: list[int], rules: list[dict[str, Any]]) -> str:
    name = lake.create(rules)
    start = 0
    for size in sizes:
        lake.append(name, events(size, start=start))
        start += size
    return name


def test_row_count_anomaly_passes_an_ordinary_append(lake: QualityLake) -> None:
    name = _appends(lake, [100, 110, 95, 105, 102], [{"rule": "row_count_anomaly"}])
    (result,) = lake.check(name).results
    assert result.passed
    assert result.observed["rows_added"] == 102 and result.observed["window"] == 4
    assert result.observed["mean"] == 102.5
    assert "Version 5 added 102 rows; the last 4 appends added 102.5" in result.message


def test_row_count_anomaly_flags_a_collapsed_append(lake: QualityLake) -> None:
    name = _appends(lake, [100, 110, 95, 105, 5], [{"rule": "row_count_anomaly", "z": 3}])
    (result,) = lake.check(name).results
    assert not result.passed
    assert result.observed["std"] == float(np.std([100, 110, 95, 105], ddof=1))
    # That std (6.5) is below the Poisson floor √mean, which is what the z-score divides by.
    assert result.observed["z"] == (5 - 102.5) / math.sqrt(102.5)
    assert result.message.endswith(": an anomaly.")


def test_row_count_anomaly_looks_only_at_the_window_before_the_checked_version(lake: QualityLake) -> None:
    name = _appends(lake, [5, 5, 100, 100, 100, 5], [{"rule": "row_count_anomaly", "window": 3}])
    (at_five,) = lake.check(name, version=5).results
    assert at_five.passed and at_five.observed["window"] == 3
    (at_six,) = lake.check(name, version=6).results
    assert not at_six.passed


def test_row_count_anomaly_needs_two_earlier_appends_to_judge(lake: QualityLake) -> None:
    name = _appends(lake, [100, 3], [{"rule": "row_count_anomaly"}])
    (result,) = lake.check(name).results
    assert result.passed and "1 earlier append(s) are too few to judge" in result.message


def test_row_count_anomaly_enforces_absolute_bounds_on_total_rows(lake: QualityLake) -> None:
    name = _appends(lake, [10, 10], [{"rule": "row_count_anomaly", "min_rows": 50, "max_rows": 100}])
    (result,) = lake.check(name).results
    assert not result.passed and result.message.startswith("The version has 20 rows; at least 50 required.")
    lake.append(name, events(90, start=20))
    (result,) = lake.check(name).results
    assert not result.passed and result.message.startswith("The version has 110 rows; at most 100 allowed.")


def test_row_count_anomaly_is_calm_about_one_row_more_than_identical_commits(lake: QualityLake) -> None:
    name = _appends(lake, [1000, 1000, 1000, 1001], [{"rule": "row_count_anomaly"}])
    (result,) = lake.check(name).results
    assert result.passed and result.observed["std"] == 0.0


def test_row_count_anomaly_skips_the_z_score_for_a_commit_that_is_not_an_append(lake: QualityLake) -> None:
    name = _appends(lake, [100, 100, 100], [{"rule": "row_count_anomaly"}])
    compacted = lake.datasets.compact(name, principal=ADMIN)
    (result,) = lake.check(name, version=compacted.version).results
    assert result.passed and "(compact) is not an append" in result.message


def test_drift_psi_fails_when_the_distribution_moves(lake: QualityLake) -> None:
    name = lake.create([{"rule": "drift", "column": "rating", "reference_version": 1}])
    lake.append(name, events(500))
    lake.append(name, events(500, start=500, rating=[5.0] * 500))
    (result,) = lake.check(name).results
    assert not result.passed
    assert result.observed["reference_version"] == 1 and result.observed["current_values"] == 1000
    # The reference has 100 each of 1..5; its deciles cut at 1, 1.8, 2, 2.6, 3, 3.4, 4, 4.2, 5. Version 2
    # moves the share of 5s from 0.2 to 0.6 and halves the other four: 4 · 0.1 · ln 2 + 0.4 · ln 3.
    assert result.observed["value"] == pytest.approx(0.4 * math.log(2) + 0.4 * math.log(3))
    assert result.examples[0] == {
        "bin": "(4.2, 5]",
        "reference_share": 0.2,
        "current_share": 0.6,
        "psi": round(0.4 * math.log(3), 6),
    }
    assert "PSI of rating between version 1 (500 values) and version 2 (1000 values)" in result.message
    assert result.message.endswith("above the threshold 0.2.")


def test_drift_passes_when_the_distribution_holds(lake: QualityLake) -> None:
    name = lake.create(
        [
            {"rule": "drift", "column": "rating"},
            {"rule": "drift", "column": "rating", "method": "ks"},
            {"rule": "drift", "column": "event_type"},
        ]
    )
    lake.append(name, events(500))
    lake.append(name, events(500, start=500))
    report = lake.check(name)
    assert [result.passed for result in report.results] == [True, True, True]
    assert all(result.observed["reference_version"] == 1 for result in report.results)  # the previous version


def test_drift_reference_given_to_the_check_overrides_the_rule(lake: QualityLake) -> None:
    name = lake.create([{"rule": "drift", "column": "rating", "method": "ks", "reference_version": 2}])
    lake.append(name, events(300))
    lake.append(name, events(300, start=300, rating=[1.0] * 300))
    same_mix = [float(1 + i % 5) for i in range(300)] + [1.0] * 300
    lake.append(name, events(600, start=600, rating=same_mix))  # version 3 has version 2's distribution
    assert lake.check(name).results[0].passed
    (result,) = lake.check(name, reference_version=1).results
    assert not result.passed and result.observed["reference_version"] == 1
    # Share of 1s: 0.2 in version 1 (60 of 300), 0.6 in version 3 (720 of 1200).
    assert result.observed["statistic"] == pytest.approx(0.4)
    p_value = result.observed["p_value"]
    assert p_value is not None and p_value < 1e-6


def test_categorical_drift_sees_a_new_dominant_category(lake: QualityLake) -> None:
    name = lake.create([{"rule": "drift", "column": "event_type", "threshold": 0.25}])
    lake.append(name, events(300))
    lake.append(name, events(600, event_type=["purchase"] * 600))
    (result,) = lake.check(name).results
    assert not result.passed and result.examples[0]["bin"] == "purchase"


def test_drift_on_the_first_version_is_not_measured(lake: QualityLake) -> None:
    result = only_result(lake, [{"rule": "drift", "column": "rating"}], version=0)
    assert result.passed and "no earlier version to compare with" in result.message


def test_drift_against_an_empty_reference_is_not_measured(lake: QualityLake) -> None:
    result = only_result(lake, [{"rule": "drift", "column": "rating"}], events(10))
    assert result.passed and "reference version 0 has 0" in result.message


def test_a_column_added_after_the_checked_version_fails_its_rule(lake: QualityLake) -> None:
    name = lake.create([])
    lake.append(name, events(5))
    spec = lake.datasets.open(name, principal=ADMIN).spec.to_dict()
    spec["columns"]["country"] = {"type": "string"}
    spec["quality"] = [{"rule": "not_null", "columns": ["country"]}]
    lake.datasets.apply(load_spec(spec), principal=ADMIN)
    (result,) = lake.check(name, version=1).results
    assert not result.passed and "Column(s) ['country'] are not in version 1" in result.message


def test_evaluate_works_on_in_memory_arrow_tables() -> None:
    spec = load_spec({"name": "mem", "columns": {"x": "int64"}})
    rules = parse_rules(
        [{"rule": "range", "column": "x", "max": 2}, {"rule": "unique", "columns": ["x"]}], spec
    )
    versions = {0: pa.table({"x": pa.array([], pa.int64())}), 1: pa.table({"x": [1, 2, 3, 3]})}
    results = evaluate(rules, spec=spec, version=1, read=versions.__getitem__)
    assert [(r.name, r.passed) for r in results] == [("range(x)", False), ("unique(x)", False)]
    assert evaluate([], spec=spec, version=1, read=versions.__getitem__) == []


def test_commits_from_history_finds_appends_and_their_rows(lake: QualityLake) -> None:
    name = _appends(lake, [4, 6], [])
    table = lake.datasets.open(name, principal=ADMIN).table
    commits = commits_from_history(table.history())
    assert [(c.version, c.appends, c.rows_added) for c in commits] == [
        (0, False, 0),
        (1, True, 4),
        (2, True, 6),
    ]
