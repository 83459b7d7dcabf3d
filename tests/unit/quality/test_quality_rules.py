"""Parsing the `quality:` list of a dataset spec into typed rules, and refusing rules that cannot work."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recplane.errors import InvalidSpec
from recplane.lake import DatasetSpec, load_spec
from recplane.quality import parse_rules
from recplane.quality.rules import (
    AllowedValuesRule,
    DriftRule,
    FreshnessRule,
    NotNullRule,
    RangeRule,
    RowCountAnomalyRule,
    UniqueRule,
)

SPEC = load_spec(
    {
        "name": "events",
        "event_time": "ts",
        "columns": {
            "user_id": "int64",
            "item_id": "int64",
            "rating": "float32",
            "event_type": "string",
            "clicked": "bool",
            "genres": "list<string>",
            "ts": "timestamp",
        },
    }
)
NO_EVENT_TIME = load_spec({"name": "plain", "columns": {"user_id": "int64"}})


def refused(rules: list[Any], spec: DatasetSpec = SPEC) -> str:
    with pytest.raises(InvalidSpec) as caught:
        parse_rules(rules, spec)
    return caught.value.message


def test_every_rule_kind_parses_into_its_typed_rule_with_defaults() -> None:
    rules = parse_rules(
        [
            {"rule": "not_null", "columns": ["user_id", "item_id"]},
            {"rule": "range", "column": "rating", "min": 1, "max": 5},
            {"rule": "allowed_values", "column": "event_type", "values": ["view", "click"]},
            {"rule": "unique", "columns": ["user_id", "item_id", "ts"]},
            {"rule": "freshness", "max_age": "2h"},
            {"rule": "row_count_anomaly", "min_rows": 1},
            {"rule": "drift", "column": "rating", "method": "ks", "reference_version": 3},
        ],
        SPEC,
    )
    kinds = [
        NotNullRule,
        RangeRule,
        AllowedValuesRule,
        UniqueRule,
        FreshnessRule,
        RowCountAnomalyRule,
        DriftRule,
    ]
    assert [type(rule) for rule in rules] == kinds
    assert all(rule.severity == "blocking" for rule in rules)
    assert [rule.name for rule in rules] == [
        "not_null(user_id, item_id)",
        "range(rating)",
        "allowed_values(event_type)",
        "unique(user_id, item_id, ts)",
        "freshness(2h)",
        "row_count_anomaly",
        "drift(rating, ks)",
    ]
    not_null, _, _, _, freshness, anomaly, drift = rules
    assert isinstance(not_null, NotNullRule) and not_null.max_null_rate == 0
    assert isinstance(freshness, FreshnessRule) and freshness.max_age_delta.total_seconds() == 7200
    assert isinstance(anomaly, RowCountAnomalyRule) and (anomaly.z, anomaly.window) == (3.0, 10)
    assert isinstance(drift, DriftRule) and drift.limit == 0.1 and drift.bins == 10


def test_psi_drift_defaults_to_threshold_0_2() -> None:
    (rule,) = parse_rules([{"rule": "drift", "column": "event_type"}], SPEC)
    assert isinstance(rule, DriftRule) and rule.method == "psi" and rule.limit == 0.2


def test_given_name_and_warning_severity_are_kept() -> None:
    (rule,) = parse_rules(
        [{"rule": "unique", "columns": ["user_id"], "name": "one row per user", "severity": "warning"}], SPEC
    )
    assert rule.name == "one row per user"
    assert rule.severity == "warning" and not rule.blocking


def test_repeated_unnamed_rules_get_numbered_names() -> None:
    rules = parse_rules(
        [
            {"rule": "range", "column": "rating", "min": 1, "max": 5, "severity": "warning"},
            {"rule": "range", "column": "rating", "min": 0, "max": 10},
        ],
        SPEC,
    )
    assert [rule.name for rule in rules] == ["range(rating)", "range(rating)#2"]


def test_two_rules_with_the_same_given_name_are_refused() -> None:
    message = refused(
        [
            {"rule": "unique", "columns": ["user_id"], "name": "x"},
            {"rule": "unique", "columns": ["item_id"], "name": "x"},
        ]
    )
    assert "two rules are named 'x'" in message


def test_unknown_rule_kind_names_the_rule_index_and_the_known_kinds() -> None:
    message = refused([{"rule": "not_null", "columns": ["user_id"]}, {"rule": "not_empty", "column": "x"}])
    assert "quality[1] (not_empty)" in message
    assert "'not_empty'" in message and "not_null, range, allowed_values" in message


def test_a_rule_without_a_kind_is_refused() -> None:
    assert "rule kind is missing" in refused([{"columns": ["user_id"]}])


def test_a_rule_that_is_not_a_mapping_is_refused() -> None:
    assert "quality[0]: a rule must be a mapping" in refused(["not_null"])


def test_unknown_column_is_refused_with_the_valid_columns() -> None:
    message = refused([{"rule": "not_null", "columns": ["user_id", "usr_id"]}])
    assert "quality[0] (not_null)" in message and "['usr_id']" in message and "'user_id'" in message


def test_range_on_a_text_column_is_refused() -> None:
    message = refused([{"rule": "range", "column": "event_type", "min": 0}])
    assert "quality[0] (range)" in message and "has type string; range needs a numeric column" in message


def test_range_needs_a_bound_and_min_not_above_max() -> None:
    assert "give at least one of min and max" in refused([{"rule": "range", "column": "rating"}])
    assert "min (5) is greater than max (1)" in refused(
        [{"rule": "range", "column": "rating", "min": 5, "max": 1}]
    )


def test_freshness_without_an_event_time_column_is_refused() -> None:
    message = refused([{"rule": "freshness", "max_age": "1h"}], NO_EVENT_TIME)
    assert "freshness needs the dataset to declare an event_time column" in message


def test_freshness_with_a_malformed_duration_is_refused() -> None:
    assert "Duration '2 hours' is not valid" in refused([{"rule": "freshness", "max_age": "2 hours"}])


def test_allowed_values_of_the_wrong_type_are_refused() -> None:
    message = refused([{"rule": "allowed_values", "column": "user_id", "values": [1, "2"]}])
    assert "values must be integers; got ['2']" in message
    assert "must be true/false" in refused([{"rule": "allowed_values", "column": "clicked", "values": [1]}])
    assert "list<string>" in refused([{"rule": "allowed_values", "column": "genres", "values": ["a"]}])


def test_an_unknown_key_is_refused_with_the_valid_keys() -> None:
    message = refused([{"rule": "not_null", "column": ["user_id"]}])
    assert "columns is required" in message
    assert "unknown key 'column' (valid keys: name, severity, columns, max_null_rate)" in message


def test_bad_severity_and_out_of_range_options_are_refused() -> None:
    assert "severity" in refused([{"rule": "unique", "columns": ["user_id"], "severity": "fatal"}])
    assert "max_null_rate" in refused([{"rule": "not_null", "columns": ["user_id"], "max_null_rate": 1.5}])
    assert "window" in refused([{"rule": "row_count_anomaly", "window": 1}])
    assert "min_rows (5) is greater than max_rows (2)" in refused(
        [{"rule": "row_count_anomaly", "min_rows": 5, "max_rows": 2}]
    )


def test_drift_on_columns_it_cannot_compare_is_refused() -> None:
    assert "ks needs a numeric, date or timestamp column" in refused(
        [{"rule": "drift", "column": "event_type", "method": "ks"}]
    )
    assert "drift works on numeric" in refused([{"rule": "drift", "column": "genres"}])
    assert "method" in refused([{"rule": "drift", "column": "rating", "method": "chi2"}])


def test_every_bad_rule_is_reported_at_once() -> None:
    with pytest.raises(InvalidSpec) as caught:
        parse_rules(
            [
                {"rule": "range", "column": "event_type", "min": 0},
                {"rule": "unique", "columns": []},
                {"rule": "unique", "columns": ["user_id"]},
            ],
            SPEC,
        )
    assert len(caught.value.details["errors"]) == 2
    assert "quality[0] (range)" in caught.value.message and "quality[1] (unique)" in caught.value.message


_KEYS = st.sampled_from(
    [
        "rule",
        "column",
        "columns",
        "min",
        "max",
        "values",
        "max_age",
        "severity",
        "name",
        "method",
        "threshold",
        "window",
        "z",
        "bins",
        "reference_version",
        "max_null_rate",
    ]
)
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 20),
    st.floats(allow_nan=False),
    st.sampled_from(
        [
            "not_null",
            "range",
            "allowed_values",
            "unique",
            "freshness",
            "row_count_anomaly",
            "drift",
            "rating",
            "user_id",
            "ts",
            "psi",
            "ks",
            "2h",
            "warning",
            "blocking",
            "bogus",
        ]
    ),
    st.lists(st.sampled_from(["user_id", "rating", "event_type", "nope", "view"]), max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(_KEYS, _VALUES, max_size=6), max_size=3))
def test_parsing_arbitrary_rules_either_succeeds_or_raises_invalid_spec(rules: list[dict[str, Any]]) -> None:
    try:
        parsed = parse_rules(rules, SPEC)
    except InvalidSpec as exc:
        assert exc.message.startswith("Invalid quality rule(s) in dataset 'events'")
        return
    assert len(parsed) == len(rules)
    assert len({rule.name for rule in parsed}) == len(parsed)
