"""Schema evolution planning: additive and widening changes pass, breaking ones are refused with a way out."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.fixtures.lake import ratings_spec, with_columns, without_columns

from recplane.errors import SchemaChangeRefused
from recplane.lake.evolution import can_widen, plan_schema_change
from recplane.lake.spec import DatasetSpec, load_spec

INTEGERS = ["int8", "int16", "int32", "int64"]


def refusal(old: DatasetSpec, new: DatasetSpec) -> str:
    with pytest.raises(SchemaChangeRefused) as caught:
        plan_schema_change(old, new)
    return caught.value.message


def test_same_spec_is_a_noop() -> None:
    assert plan_schema_change(ratings_spec(), ratings_spec()).is_noop


def test_new_nullable_column_is_additive() -> None:
    plan = plan_schema_change(ratings_spec(), with_columns(ratings_spec(), genre="string"))
    assert plan.added == ("genre",) and plan.changes_schema and not plan.needs_rewrite


def test_integer_widening_needs_a_rewrite() -> None:
    plan = plan_schema_change(ratings_spec(), with_columns(ratings_spec(), item_id="int64", rating="float64"))
    assert [(w.column, w.old, w.new) for w in plan.widened] == [("rating", "float32", "float64")]
    assert plan.needs_rewrite


def test_non_nullable_to_nullable_is_relaxed() -> None:
    plan = plan_schema_change(ratings_spec(), with_columns(ratings_spec(), user_id="int32"))
    assert plan.relaxed == ("user_id",) and plan.needs_rewrite


def test_metadata_only_changes_are_listed() -> None:
    new = ratings_spec(description="star ratings", retention="30d", dedup_key=["user_id", "ts"],
                       quality=[{"rule": "not_null", "columns": ["user_id"]}])
    plan = plan_schema_change(ratings_spec(), new)
    assert set(plan.metadata_changes) == {"description", "retention", "dedup_key", "quality"}
    assert not plan.changes_schema


def test_dropped_column_is_refused_with_the_safe_path() -> None:
    message = refusal(ratings_spec(), without_columns(ratings_spec(), "rating"))
    assert "Column 'rating' is missing" in message and "backfill" in message


def test_rename_is_refused_and_named_as_a_rename() -> None:
    renamed = with_columns(without_columns(ratings_spec(), "rating"), score="float32")
    message = refusal(ratings_spec(), renamed)
    assert "renamed to 'score'" in message


def test_incompatible_type_is_refused_with_the_issue_wording() -> None:
    message = refusal(ratings_spec(), with_columns(ratings_spec(), item_id="string"))
    expected = "Column 'item_id' cannot change from int64 to string (breaking). Add a new column and backfill"
    assert expected in message


def test_narrowing_is_refused_as_narrowing() -> None:
    message = refusal(ratings_spec(), with_columns(ratings_spec(), item_id="int32"))
    assert "from int64 to int32 (narrowing)" in message


def test_new_non_nullable_column_is_refused() -> None:
    new = with_columns(ratings_spec(), genre={"type": "string", "nullable": False})
    assert "New column 'genre' is declared non-nullable" in refusal(ratings_spec(), new)


def test_nullable_to_non_nullable_is_refused() -> None:
    new = with_columns(ratings_spec(), item_id={"type": "int64", "nullable": False})
    assert "'item_id' cannot change from nullable to non-nullable" in refusal(ratings_spec(), new)


@pytest.mark.parametrize(
    ("field", "value"),
    [("team", "growth"), ("event_time", None), ("partition_by", ["item_id"])],
)
def test_team_event_time_and_partitioning_are_fixed(field: str, value: object) -> None:
    assert f"'{field}' cannot change" in refusal(ratings_spec(), ratings_spec(**{field: value}))


def test_every_breaking_change_is_reported_at_once() -> None:
    new = with_columns(without_columns(ratings_spec(), "rating"), item_id="string")
    with pytest.raises(SchemaChangeRefused) as caught:
        plan_schema_change(ratings_spec(), new)
    assert len(caught.value.details["problems"]) == 2


@given(st.sampled_from(INTEGERS), st.sampled_from(INTEGERS))
def test_integer_widening_accepts_exactly_the_wider_types(old: str, new: str) -> None:
    spec = load_spec({"name": "t", "columns": {"a": old}})
    changed = load_spec({"name": "t", "columns": {"a": new}})
    if INTEGERS.index(new) > INTEGERS.index(old):
        assert plan_schema_change(spec, changed).widened[0].new == new
    elif new == old:
        assert plan_schema_change(spec, changed).is_noop
    else:
        with pytest.raises(SchemaChangeRefused, match="narrowing"):
            plan_schema_change(spec, changed)


_NAME = st.from_regex(r"[a-z]{1,8}", fullmatch=True)
_TYPE = st.sampled_from([*INTEGERS, "float32", "float64", "string", "bool", "timestamp", "list<int32>"])


@given(_TYPE, _TYPE)
def test_widening_is_never_symmetric(old: str, new: str) -> None:
    assert not (can_widen(old, new) and can_widen(new, old))


@given(
    st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), _TYPE, min_size=1, max_size=5),
    st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), _TYPE, min_size=1, max_size=3),
)
def test_adding_nullable_columns_is_always_additive(old: dict[str, str], extra: dict[str, str]) -> None:
    extra = {f"new_{name}": kind for name, kind in extra.items()}
    spec = load_spec({"name": "t", "columns": old})
    grown = load_spec({"name": "t", "columns": {**old, **extra}})
    plan = plan_schema_change(spec, grown)
    assert set(plan.added) == set(extra) and not plan.widened and not plan.metadata_changes


@given(st.dictionaries(_NAME, _TYPE, min_size=2, max_size=6), st.data())
def test_dropping_any_column_is_always_refused(columns: dict[str, str], data: st.DataObject) -> None:
    dropped = data.draw(st.sampled_from(sorted(columns)))
    spec = load_spec({"name": "t", "columns": columns})
    smaller = load_spec({"name": "t", "columns": {k: v for k, v in columns.items() if k != dropped}})
    with pytest.raises(SchemaChangeRefused, match=f"Column '{dropped}' is missing"):
        plan_schema_change(spec, smaller)
