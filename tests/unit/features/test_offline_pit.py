"""Point-in-time semantics of the offline engine: hand-built cases and a brute-force reference on random data."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pytest

from recplane.errors import InvalidInput
from recplane.features.offline import join_features, plan_training_set
from recplane.features.offline.engine import latest_point_values
from recplane.features.offline.plan import TrainingSetPlan
from recplane.features.spec import Entity, FeatureView

T0 = datetime(2026, 1, 1, tzinfo=UTC)
USER = Entity(name="user", join_keys=["user_id"])
ITEM = Entity(name="item", join_keys=["item_id"])
ENTITIES = {"user": USER, "item": ITEM}


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def _plan(views: Sequence[FeatureView], labels: pa.Table, refs: Sequence[str] | None = None) -> TrainingSetPlan:
    pinned = {view.name: (view, 1) for view in views}
    return plan_training_set(
        refs or [f"{view.name}:*" for view in views],
        pinned,
        ENTITIES,
        {v.source: "ts" for v in views},
        labels.column_names,
    )


def _join(views: Sequence[FeatureView], sources: dict[str, pa.Table], labels: pa.Table, **options: Any) -> pa.Table:
    return join_features(labels, _plan(views, labels), sources, **options)


def _view(**overrides: Any) -> FeatureView:
    spec: dict[str, Any] = {"name": "stats", "entities": ["user"], "source": "events", "features": ["price"]}
    return FeatureView.model_validate({**spec, **overrides})


def test_latest_value_at_or_before_the_label_time_wins() -> None:
    source = pa.table({"user_id": [1, 1, 1], "ts": [at(1), at(2), at(3)], "price": [1.0, 2.0, 3.0]})
    labels = pa.table({"user_id": [1, 1, 1, 1], "ts": [at(0.5), at(2), at(2.5), at(9)]})
    result = _join([_view()], {"stats": source}, labels)
    assert result["price"].to_pylist() == [None, 2.0, 2.0, 3.0]


def test_event_time_ties_go_to_the_latest_created_time() -> None:
    source = pa.table(
        {
            "user_id": [1, 1, 1],
            "ts": [at(1), at(1), at(1)],
            "created": [at(1.2), at(1.5), at(1.1)],
            "price": [10.0, 20.0, 30.0],
        }
    )
    labels = pa.table({"user_id": [1], "ts": [at(2)]})
    result = _join([_view(created_time="created")], {"stats": source}, labels)
    assert result["price"].to_pylist() == [20.0]


def test_full_ties_fall_back_to_the_largest_value_whatever_the_row_order() -> None:
    rows = {"user_id": [1, 1, 1], "ts": [at(1)] * 3, "price": [5.0, 7.0, 6.0]}
    labels = pa.table({"user_id": [1], "ts": [at(2)]})
    forward = _join([_view()], {"stats": pa.table(rows)}, labels)
    backward = _join([_view()], {"stats": pa.table({k: v[::-1] for k, v in rows.items()})}, labels)
    assert forward["price"].to_pylist() == backward["price"].to_pylist() == [7.0]


def test_ttl_expires_values_older_than_label_time_minus_ttl() -> None:
    source = pa.table({"user_id": [1, 2], "ts": [at(0), at(0)], "price": [1.0, 2.0]})
    labels = pa.table({"user_id": [1, 1, 1, 2], "ts": [at(1.99), at(2), at(2.01), at(3)]})
    result = _join([_view(ttl="2h")], {"stats": source}, labels)
    # [t - ttl, t]: a value exactly ttl old is still fresh (as online and in Feast); a moment later it expired.
    assert result["price"].to_pylist() == [1.0, 1.0, None, None]


def test_missing_entities_and_null_keys_get_nulls_and_keep_every_label_row_in_order() -> None:
    source = pa.table({"user_id": [1], "ts": [at(0)], "price": [1.0]})
    labels = pa.table({"user_id": [3, None, 1, 2], "ts": [at(1), at(1), at(1), None], "label": [1, 0, 1, 0]})
    result = _join([_view()], {"stats": source}, labels)
    assert result["label"].to_pylist() == [1, 0, 1, 0]
    assert result["price"].to_pylist() == [None, None, 1.0, None]


def test_backfilled_rows_created_after_the_label_are_ignored_only_when_asked() -> None:
    # The 05:00 value was backfilled at 10:00: a label at 06:00 could not have seen it.
    source = pa.table(
        {
            "user_id": [1, 1],
            "ts": [at(1), at(5)],
            "created": [at(1), at(10)],
            "price": [1.0, 5.0],
        }
    )
    labels = pa.table({"user_id": [1, 1], "ts": [at(6), at(11)]})
    view = _view(created_time="created", features=["price", {"name": "n", "agg": "count", "window": "1d"}])
    leaky = _join([view], {"stats": source}, labels)
    safe = _join([view], {"stats": source}, labels, exclude_created_after_label=True)
    assert leaky["price"].to_pylist() == [5.0, 5.0]
    assert safe["price"].to_pylist() == [1.0, 5.0]
    assert leaky["n"].to_pylist() == [2, 2]
    assert safe["n"].to_pylist() == [1, 2]


def test_late_arriving_tie_winner_does_not_leak_but_the_earlier_tie_does() -> None:
    source = pa.table(
        {
            "user_id": [1, 1],
            "ts": [at(1), at(1)],
            "created": [at(1), at(4)],
            "price": [1.0, 2.0],
        }
    )
    labels = pa.table({"user_id": [1, 1], "ts": [at(3), at(4)]})
    result = _join([_view(created_time="created")], {"stats": source}, labels, exclude_created_after_label=True)
    assert result["price"].to_pylist() == [1.0, 2.0]


def test_window_includes_the_label_time_and_excludes_label_time_minus_window() -> None:
    source = pa.table({"user_id": [1, 1, 1], "ts": [at(0), at(0.5), at(1)], "qty": [1, 10, 100]})
    labels = pa.table({"user_id": [1, 1], "ts": [at(1), at(0.99)]})
    features = [
        {"name": "n", "agg": "count", "window": "1h"},
        {"name": "total", "agg": "sum", "column": "qty", "window": "1h"},
        {"name": "low", "agg": "min", "column": "qty", "window": "1h"},
        {"name": "high", "agg": "max", "column": "qty", "window": "1h"},
        {"name": "avg", "agg": "mean", "column": "qty", "window": "1h"},
        {"name": "recent", "agg": "last_n", "column": "qty", "n": 5, "window": "1h"},
    ]
    result = _join([_view(features=features)], {"stats": source}, labels)
    assert result["n"].to_pylist() == [2, 2]
    assert result["total"].to_pylist() == [110, 11]
    assert result["low"].to_pylist() == [10, 1]
    assert result["high"].to_pylist() == [100, 10]
    assert result["avg"].to_pylist() == [55.0, 5.5]
    assert result["recent"].to_pylist() == [[10, 100], [1, 10]]


def test_empty_windows_give_zero_counts_and_sums_empty_lists_and_null_extremes() -> None:
    source = pa.table({"user_id": [1], "ts": [at(0)], "qty": [3]})
    labels = pa.table({"user_id": [1, 9], "ts": [at(5), at(5)]})
    features = [
        {"name": "n", "agg": "count", "window": "1h"},
        {"name": "total", "agg": "sum", "column": "qty", "window": "1h"},
        {"name": "high", "agg": "max", "column": "qty", "window": "1h"},
        {"name": "recent", "agg": "last_n", "column": "qty", "n": 2, "window": "1h"},
    ]
    result = _join([_view(features=features)], {"stats": source}, labels)
    assert (
        result.select(["n", "total", "high", "recent"]).to_pylist()
        == [
            {"n": 0, "total": 0, "high": None, "recent": []},
        ]
        * 2
    )


def test_last_n_keeps_the_n_latest_values_oldest_first() -> None:
    source = pa.table({"user_id": [1] * 5, "ts": [at(h) for h in (1, 2, 3, 4, 5)], "item": [11, 12, 13, None, 15]})
    labels = pa.table({"user_id": [1, 1], "ts": [at(4.5), at(9)]})
    view = _view(features=[{"name": "recent", "agg": "last_n", "column": "item", "n": 2, "window": "1d"}])
    assert _join([view], {"stats": source}, labels)["recent"].to_pylist() == [[12, 13], [13, 15]]


def test_user_item_and_user_x_item_views_join_on_their_own_keys() -> None:
    user_view = FeatureView(name="u", entities=["user"], source="ue", features=["age"])  # type: ignore[list-item]
    item_view = FeatureView(name="i", entities=["item"], source="ie", features=["price"])  # type: ignore[list-item]
    pair_view = FeatureView.model_validate(
        {
            "name": "ui",
            "entities": ["user", "item"],
            "source": "uie",
            "features": [{"name": "views", "agg": "count", "window": "1d"}, "rating"],
        }
    )
    sources = {
        "u": pa.table({"user_id": [1, 2], "ts": [at(0), at(0)], "age": [30, 40]}),
        "i": pa.table({"item_id": [7, 8], "ts": [at(0), at(0)], "price": [1.5, 2.5]}),
        "ui": pa.table({"user_id": [1, 1, 2], "item_id": [7, 7, 8], "ts": [at(1), at(2), at(1)], "rating": [3, 4, 5]}),
    }
    labels = pa.table({"user_id": [1, 1, 2, 2], "item_id": [7, 8, 8, 7], "ts": [at(3)] * 4})
    result = _join([user_view, item_view, pair_view], sources, labels)
    assert result.select(["age", "price", "views", "rating"]).to_pylist() == [
        {"age": 30, "price": 1.5, "views": 2, "rating": 4},
        {"age": 30, "price": 2.5, "views": 0, "rating": None},
        {"age": 40, "price": 2.5, "views": 1, "rating": 5},
        {"age": 40, "price": 1.5, "views": 0, "rating": None},
    ]


def test_sql_expressions_compute_over_the_chosen_row() -> None:
    source = pa.table({"user_id": [1, 1], "ts": [at(1), at(2)], "price": [2.0, 3.0], "quantity": [5, 7]})
    view = _view(features=[{"name": "spend", "expr": "price * quantity"}, {"name": "tag", "expr": "'u' || user_id"}])
    result = _join([view], {"stats": source}, pa.table({"user_id": [1], "ts": [at(1.5)]}))
    assert result.select(["spend", "tag"]).to_pylist() == [{"spend": 10.0, "tag": "u1"}]


def test_naive_label_times_are_utc() -> None:
    source = pa.table({"user_id": [1, 1], "ts": [at(1), at(2)], "price": [1.0, 2.0]})
    labels = pa.table({"user_id": [1], "ts": pa.array([datetime(2026, 1, 1, 1, 30)], pa.timestamp("us"))})
    assert _join([_view()], {"stats": source}, labels)["price"].to_pylist() == [1.0]


def test_label_time_column_must_exist_and_be_a_time() -> None:
    source = pa.table({"user_id": [1], "ts": [at(1)], "price": [1.0]})
    with pytest.raises(InvalidInput, match="no time column 'when'"):
        _join([_view()], {"stats": source}, pa.table({"user_id": [1], "ts": [at(1)]}), label_time_col="when")
    with pytest.raises(InvalidInput, match="must be a timestamp"):
        _join([_view()], {"stats": source}, pa.table({"user_id": [1], "ts": ["2026-01-01"]}))


def test_labels_without_a_join_key_or_with_a_clashing_column_are_refused() -> None:
    labels = pa.table({"customer": [1], "ts": [at(1)]})
    with pytest.raises(InvalidInput, match=r"lack join key column\(s\) \['user_id'\]"):
        _plan([_view()], labels)
    with pytest.raises(InvalidInput, match=r"already have column\(s\) \['price'\]"):
        _plan([_view()], pa.table({"user_id": [1], "ts": [at(1)], "price": [1.0]}))


# ---- brute force reference -------------------------------------------------------------------------------------

WINDOWED = [
    {"name": "n_3h", "agg": "count", "window": "3h"},
    {"name": "n_qty_1d", "agg": "count", "column": "qty", "window": "1d"},
    {"name": "qty_1d", "agg": "sum", "column": "qty", "window": "1d"},
    {"name": "price_mean_6h", "agg": "mean", "column": "price", "window": "6h"},
    {"name": "price_min_6h", "agg": "min", "column": "price", "window": "6h"},
    {"name": "price_max_2h", "agg": "max", "column": "price", "window": "2h"},
    {"name": "last_items", "agg": "last_n", "column": "item", "n": 3, "window": "12h"},
]
POINT = ["price", "qty", {"name": "spend", "expr": "price * qty"}]
RANDOM_VIEW = FeatureView.model_validate(
    {
        "name": "stats",
        "entities": ["user"],
        "source": "events",
        "created_time": "created",
        "ttl": "5h",
        "features": POINT + WINDOWED,
    }
)


def _random_source(rng: random.Random, rows: int) -> pa.Table:
    hours = [rng.randrange(0, 48) / 2 for _ in range(rows)]  # a half-hour grid: many event-time ties
    created = [None if rng.random() < 0.1 else h + rng.choice([0, 0, 0.5, 1, 3]) for h in hours]
    return pa.table(
        {
            "user_id": [rng.randrange(1, 25) for _ in range(rows)],
            "ts": [at(h) for h in hours],
            "created": [None if c is None else at(c) for c in created],
            "price": [None if rng.random() < 0.1 else float(rng.randrange(1, 6)) for _ in range(rows)],
            "qty": [None if rng.random() < 0.1 else rng.randrange(0, 4) for _ in range(rows)],
            "item": [None if rng.random() < 0.1 else rng.randrange(100, 110) for _ in range(rows)],
        }
    )


def _random_labels(rng: random.Random, rows: int) -> pa.Table:
    return pa.table(
        {
            "user_id": [rng.randrange(1, 30) for _ in range(rows)],  # users 25..29 have no rows
            "ts": [None if rng.random() < 0.02 else at(rng.randrange(0, 56) / 2) for _ in range(rows)],
        }
    )


def _none_first(value: Any) -> tuple[bool, Any]:
    return (value is not None, value if value is not None else 0)


def _reference(source: list[dict[str, Any]], label: dict[str, Any], exclude_late: bool) -> dict[str, Any]:
    """The answer by definition, row by row."""
    t = label["ts"]
    rows = (
        []
        if t is None
        else [
            r
            for r in source
            if r["user_id"] == label["user_id"]
            and r["ts"] <= t
            and (not exclude_late or (r["created"] or r["ts"]) <= t)
        ]
    )
    answer: dict[str, Any] = {}
    for row in rows:
        row["spend"] = None if row["price"] is None or row["qty"] is None else row["price"] * row["qty"]
    order = sorted(
        rows,
        key=lambda r: (
            r["ts"],
            _none_first(r["created"]),
            _none_first(r["price"]),
            _none_first(r["qty"]),
            _none_first(r["spend"]),
        ),
    )
    best = order[-1] if order and order[-1]["ts"] >= t - timedelta(hours=5) else None
    for name in ("price", "qty", "spend"):
        answer[name] = None if best is None else best[name]
    for spec in WINDOWED:
        hours = {"3h": 3, "1d": 24, "6h": 6, "2h": 2, "12h": 12}[spec["window"]]
        window = [r for r in order if r["ts"] > t - timedelta(hours=hours)]
        answer[spec["name"]] = _aggregate(spec, window)
    return answer


def _aggregate(spec: dict[str, Any], window: list[dict[str, Any]]) -> Any:
    column = spec.get("column")
    if spec["agg"] == "last_n":
        return _last_values(window, column or "", spec["n"])
    values = [r[column] for r in window if r[column] is not None] if column else window
    if spec["agg"] == "count":
        return len(values)
    if spec["agg"] == "sum":
        return sum(values)
    if not values:
        return None
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}[spec["agg"]]


def _last_values(window: list[dict[str, Any]], column: str, n: int) -> list[Any]:
    ordered = sorted(window, key=lambda r: (r["ts"], _none_first(r["created"]), _none_first(r[column])))
    return [r[column] for r in ordered if r[column] is not None][-n:]


def _same(got: Any, expected: Any) -> bool:
    if isinstance(expected, float) and got is not None:
        return bool(got == pytest.approx(expected))
    return bool(got == expected)


@pytest.mark.parametrize("exclude_late", [False, True])
@pytest.mark.parametrize("seed", [1, 2])
def test_engine_matches_a_brute_force_reference_on_random_data(seed: int, exclude_late: bool) -> None:
    rng = random.Random(seed)
    source, labels = _random_source(rng, 600), _random_labels(rng, 400)
    plan = _plan([RANDOM_VIEW], labels)
    result = join_features(labels, plan, {"stats": source}, exclude_created_after_label=exclude_late, chunk_rows=97)
    rows = source.to_pylist()
    names = plan.outputs
    mismatches = []
    for index, (label, got) in enumerate(zip(labels.to_pylist(), result.select(names).to_pylist(), strict=True)):
        expected = _reference(rows, label, exclude_late)
        for name in names:
            if not _same(got[name], expected[name]):
                mismatches.append((index, name, got[name], expected[name]))
    assert mismatches == []
    assert result.column("user_id").to_pylist() == labels.column("user_id").to_pylist()


def test_chunking_gives_the_same_answer_as_one_chunk() -> None:
    rng = random.Random(7)
    source, labels = _random_source(rng, 500), _random_labels(rng, 300)
    plan = _plan([RANDOM_VIEW], labels)
    whole = join_features(labels, plan, {"stats": source}, exclude_created_after_label=True, chunk_rows=10_000)
    chunked = join_features(labels, plan, {"stats": source}, exclude_created_after_label=True, chunk_rows=7)
    assert chunked.equals(whole)


def test_key_range_chunks_handle_string_keys_null_keys_and_one_key_holding_most_labels() -> None:
    source = pa.table(
        {
            "user_id": ["a", "a", "b", "c", "d"],
            "ts": [at(1), at(3), at(2), at(2), at(1)],
            "price": [1.0, 3.0, 2.0, 4.0, 5.0],
        }
    )
    keys = ["a"] * 9 + ["b", None, "c", "zz", "d"]
    labels = pa.table({"user_id": keys, "ts": [at(2.5)] * 4 + [at(4)] * 5 + [at(3)] * 5, "row": list(range(14))})
    whole = _join([_view()], {"stats": source}, labels, chunk_rows=100)
    chunked = _join([_view()], {"stats": source}, labels, chunk_rows=3)
    assert chunked.equals(whole)
    assert whole["price"].to_pylist() == [1.0] * 4 + [3.0] * 5 + [2.0, None, 4.0, None, 5.0]


def test_labels_whose_keys_are_all_null_get_nulls_in_every_chunk() -> None:
    source = pa.table({"user_id": [1, 2], "ts": [at(1), at(2)], "price": [1.0, 2.0]})
    labels = pa.table({"user_id": pa.array([None] * 5, pa.int64()), "ts": [at(5)] * 5})
    assert _join([_view()], {"stats": source}, labels, chunk_rows=2)["price"].to_pylist() == [None] * 5


def test_few_labels_cut_the_source_to_their_entities_without_changing_answers() -> None:
    rng = random.Random(11)
    source, labels = _random_source(rng, 600), _random_labels(rng, 40)
    narrow = labels.set_column(0, "user_id", labels["user_id"].cast(pa.int32()))  # key type differs from the source
    plan = _plan([RANDOM_VIEW], labels)
    cut = join_features(labels, plan, {"stats": source}, chunk_rows=1_000)  # one chunk: entities cut
    narrow_cut = join_features(narrow, plan, {"stats": source}, chunk_rows=1_000)
    uncut = join_features(labels, plan, {"stats": source}, chunk_rows=39)  # two chunks: all source rows
    assert cut.equals(uncut)
    assert narrow_cut.drop_columns(["user_id"]).equals(cut.drop_columns(["user_id"]))


def test_a_dataset_source_reads_only_what_it_needs_and_answers_like_a_table() -> None:
    rng = random.Random(5)
    source, labels = _random_source(rng, 400), _random_labels(rng, 150)
    source = source.append_column("unused", pa.array(["x"] * source.num_rows))
    plan = _plan([RANDOM_VIEW], labels)
    for exclude_late in (False, True):
        from_table = join_features(labels, plan, {"stats": source}, exclude_created_after_label=exclude_late)
        from_dataset = join_features(
            labels, plan, {"stats": pads.dataset(source)}, exclude_created_after_label=exclude_late
        )
        assert from_dataset.equals(from_table)


def test_latest_point_values_equal_a_training_set_label_at_that_time() -> None:
    rng = random.Random(3)
    source = _random_source(rng, 600)
    view = RANDOM_VIEW.model_copy(update={"ttl": None})
    as_of = at(15)
    everyone = pa.table({"user_id": list(range(1, 30)), "ts": [as_of] * 29})
    point = _plan([view], everyone).views[0]
    point = dataclasses.replace(point, aggregations=())
    latest = latest_point_values(point, source, as_of)
    assert latest["user_id"].to_pylist() == sorted(latest["user_id"].to_pylist())  # ordered by keys
    expected = join_features(everyone, TrainingSetPlan((point,)), {"stats": source}, label_time_col="ts")
    answered = expected.filter(pc.is_in(expected["user_id"], latest["user_id"]))
    names = [out.output for out in point.point]
    assert latest.select(["user_id", *names]).to_pylist() == answered.select(["user_id", *names]).to_pylist()
    has_rows = {r["user_id"] for r in source.to_pylist() if r["ts"] <= as_of}
    assert set(latest["user_id"].to_pylist()) == has_rows
