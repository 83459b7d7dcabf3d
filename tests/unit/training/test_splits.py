"""Splits follow RecBole 1.2.1's rules: per-user sizes, shuffling, leave-one-out and time order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recplane.errors import InvalidInput
from recplane.training.splits import (
    Split,
    leave_one_out_split,
    random_split,
    split_sizes,
    temporal_split,
    temporal_split_at,
)


def reference_split_sizes(total: int, ratios: list[float]) -> list[int]:
    """RecBole's ``Dataset._calcu_split_ids`` rule, restated as sizes per part."""
    normalised = [r / sum(ratios) for r in ratios]
    counts = [int(r * total) for r in normalised]
    counts[0] = total - sum(counts[1:])
    for i in range(1, len(normalised)):
        if counts[0] <= 1:
            break
        if 0 < normalised[-i] * total < 1:
            counts[-i] += 1
            counts[0] -= 1
    return counts


def interactions(users: list[int], times: list[int] | None = None) -> pa.Table:
    n = len(users)
    return pa.table(
        {
            "row": pa.array(range(n), pa.int64()),
            "user_id": pa.array(users, pa.int64()),
            "item_id": pa.array([(7 * i) % 13 for i in range(n)], pa.int64()),
            "ts": pa.array(times if times is not None else list(range(n)), pa.int64()),
        }
    )


def rows(table: pa.Table) -> list[int]:
    return table.column("row").to_pylist()


def assert_partition(split: Split, table: pa.Table) -> None:
    parts = [set(rows(split.train)), set(rows(split.valid)), set(rows(split.test))]
    assert sum(len(p) for p in parts) == table.num_rows
    assert set().union(*parts) == set(rows(table))
    for part in (split.train, split.valid, split.test):
        assert rows(part) == sorted(rows(part)), "each part keeps the input order"
        assert part.schema == table.schema


class TestSplitSizes:
    @pytest.mark.parametrize(
        ("total", "expected"),
        [
            (1, [1, 0, 0]),  # the first part keeps a single row: the loop stops at once
            (2, [1, 0, 1]),  # 0.2 test rows -> 1; then train has 1 row left and the loop stops
            (3, [1, 1, 1]),  # 0.3 -> 1 test, 0.3 -> 1 valid, train 1
            (5, [3, 1, 1]),  # 0.5 -> 1 each
            (10, [8, 1, 1]),  # int(1.0) = 1 each
            (19, [17, 1, 1]),  # int(1.9) = 1 each (rounded down, no bump: 1.9 >= 1)
            (20, [16, 2, 2]),
            (25, [21, 2, 2]),  # int(2.5) = 2 each
            (30, [24, 3, 3]),  # 0.1 * 30 = 3.0000000000000004 -> 3
        ],
    )
    def test_hand_computed_sizes_for_8_1_1(self, total: int, expected: list[int]) -> None:
        assert split_sizes(total, (0.8, 0.1, 0.1)).tolist() == expected

    @settings(max_examples=200, deadline=None)
    @given(
        totals=st.lists(st.integers(0, 500), min_size=1, max_size=20),
        ratios=st.lists(st.integers(0, 10), min_size=3, max_size=3).filter(lambda r: sum(r) > 0),
    )
    def test_vectorised_sizes_equal_recboles_rule(self, totals: list[int], ratios: list[int]) -> None:
        as_float = [float(r) for r in ratios]
        expected = [reference_split_sizes(t, as_float) for t in totals]
        assert split_sizes(np.array(totals), as_float).tolist() == expected

    def test_bad_ratios_are_refused(self) -> None:
        with pytest.raises(InvalidInput, match="three non-negative"):
            split_sizes(10, (0.8, 0.2))
        with pytest.raises(InvalidInput, match="three non-negative"):
            split_sizes(10, (1.0, -0.5, 0.5))


class TestRandomSplit:
    def test_shuffles_with_a_seeded_randperm_then_cuts(self) -> None:
        table = interactions([0] * 10)
        # torch.randperm(10) after manual_seed(2020) is [0, 7, 5, 4, 2, 6, 1, 8, 9, 3]:
        # the first 8 shuffled rows train, the 9th validates, the 10th tests (sizes 8, 1, 1).
        split = random_split(table)
        assert rows(split.train) == [0, 1, 2, 4, 5, 6, 7, 8]
        assert rows(split.valid) == [9]
        assert rows(split.test) == [3]

    @settings(max_examples=40, deadline=None)
    @given(users=st.lists(st.integers(0, 6), min_size=1, max_size=120), seed=st.integers(0, 10_000))
    def test_each_users_sizes_follow_recbole_and_every_row_lands_once(self, users: list[int], seed: int) -> None:
        table = interactions(users)
        split = random_split(table, seed=seed)
        assert_partition(split, table)
        for user in set(users):
            got = [part.column("user_id").to_pylist().count(user) for part in (split.train, split.valid, split.test)]
            assert got == reference_split_sizes(users.count(user), [0.8, 0.1, 0.1])

    def test_is_deterministic_for_a_seed_and_changes_with_it(self) -> None:
        table = interactions([u % 5 for u in range(200)])
        assert rows(random_split(table, seed=1).test) == rows(random_split(table, seed=1).test)
        assert rows(random_split(table, seed=1).test) != rows(random_split(table, seed=2).test)

    def test_ungrouped_split_cuts_the_whole_table(self) -> None:
        table = interactions([u % 3 for u in range(95)])
        split = random_split(table, group_by=None)
        assert split.sizes() == tuple(reference_split_sizes(95, [0.8, 0.1, 0.1]))
        assert_partition(split, table)

    def test_groups_by_any_column_type(self) -> None:
        table = interactions(list(range(20))).append_column("session", pa.array(["a", "b"] * 10))
        split = random_split(table, group_by="session")
        assert split.sizes() == (16, 2, 2)

    def test_missing_or_null_group_column_is_refused(self) -> None:
        with pytest.raises(InvalidInput, match="no column 'uid'"):
            random_split(interactions([1, 2]), group_by="uid")
        nulls = pa.table({"user_id": pa.array([1, None], pa.int64())})
        with pytest.raises(InvalidInput, match="1 null value"):
            random_split(nulls)


class TestLeaveOneOut:
    def test_last_interaction_tests_and_the_one_before_validates(self) -> None:
        # User 0's rows in time order: rows 2 (t=1), 0 (t=3), 3 (t=5), 1 (t=9).
        table = interactions([0, 0, 0, 0], times=[3, 9, 1, 5])
        split = leave_one_out_split(table)
        assert (rows(split.train), rows(split.valid), rows(split.test)) == ([0, 2], [3], [1])

    @pytest.mark.parametrize(
        ("count", "general", "sequential"),
        [
            (1, (1, 0, 0), (1, 0, 0)),
            (2, (1, 0, 1), (2, 0, 0)),  # general keeps 1 train row; sequential needs 2
            (3, (1, 1, 1), (2, 0, 1)),  # sequential: the 1st item is context only, so no valid row
            (4, (2, 1, 1), (2, 1, 1)),
        ],
    )
    def test_sizes_for_short_histories(
        self, count: int, general: tuple[int, int, int], sequential: tuple[int, int, int]
    ) -> None:
        table = interactions([0] * count)
        assert leave_one_out_split(table).sizes() == general
        assert leave_one_out_split(table, min_train=2).sizes() == sequential

    def test_valid_only_and_test_only_hold_out_one_row(self) -> None:
        table = interactions([0, 0, 0])
        assert leave_one_out_split(table, mode="valid_only").sizes() == (2, 1, 0)
        assert leave_one_out_split(table, mode="test_only").sizes() == (2, 0, 1)

    def test_equal_timestamps_keep_input_order(self) -> None:
        table = interactions([0, 0, 0, 0], times=[5, 5, 5, 1])
        split = leave_one_out_split(table)
        # Time order (stable): rows 3, 0, 1, 2 -> test row 2, valid row 1.
        assert (rows(split.valid), rows(split.test)) == ([1], [2])

    @settings(max_examples=40, deadline=None)
    @given(events=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 50)), min_size=1, max_size=80))
    def test_time_order_is_respected_per_user(self, events: list[tuple[int, int]]) -> None:
        table = interactions([u for u, _ in events], times=[t for _, t in events])
        split = leave_one_out_split(table)
        assert_partition(split, table)
        by_part = [
            {(u, t) for u, t in zip(p.column("user_id").to_pylist(), p.column("ts").to_pylist(), strict=True)}
            for p in (split.train, split.valid, split.test)
        ]
        for user in {u for u, _ in events}:
            train, valid, test = ([t for u, t in part if u == user] for part in by_part)
            assert len(valid) <= 1 and len(test) <= 1
            assert all(t <= v for t in train for v in valid + test)
            assert all(v <= t for v in valid for t in test)

    def test_timestamp_columns_work(self) -> None:
        start = datetime(2024, 1, 1, tzinfo=UTC)
        table = pa.table(
            {"user_id": [1, 1, 1], "ts": pa.array([start + timedelta(days=d) for d in (2, 0, 1)], pa.timestamp("us"))}
        )
        split = leave_one_out_split(table)
        assert split.test.column("ts")[0].as_py().day == 3


class TestTemporalSplit:
    def test_by_ratio_the_oldest_rows_train_and_the_newest_test(self) -> None:
        times = [9, 3, 7, 1, 5, 8, 2, 6, 4, 0]
        split = temporal_split(interactions([0] * 10, times=times))
        assert sorted(split.train.column("ts").to_pylist()) == [0, 1, 2, 3, 4, 5, 6, 7]
        assert split.valid.column("ts").to_pylist() == [8]
        assert split.test.column("ts").to_pylist() == [9]

    @settings(max_examples=40, deadline=None)
    @given(times=st.lists(st.integers(0, 30), min_size=1, max_size=60))
    def test_sizes_follow_recbole_and_time_never_goes_back(self, times: list[int]) -> None:
        table = interactions([0] * len(times), times=times)
        split = temporal_split(table)
        assert_partition(split, table)
        assert split.sizes() == tuple(reference_split_sizes(len(times), [0.8, 0.1, 0.1]))
        train, valid, test = (p.column("ts").to_pylist() for p in (split.train, split.valid, split.test))
        assert all(a <= b for a in train for b in valid + test)
        assert all(a <= b for a in valid for b in test)

    def test_at_cut_points(self) -> None:
        table = interactions([0] * 6, times=[0, 10, 20, 30, 40, 50])
        split = temporal_split_at(table, 20, 40)
        assert [p.column("ts").to_pylist() for p in (split.train, split.valid, split.test)] == [
            [0, 10],
            [20, 30],
            [40, 50],
        ]

    def test_at_datetimes_on_a_timestamp_column(self) -> None:
        start = datetime(2024, 1, 1, tzinfo=UTC)
        table = pa.table({"ts": pa.array([start + timedelta(days=d) for d in range(10)], pa.timestamp("us", "UTC"))})
        split = temporal_split_at(table, start + timedelta(days=7), start + timedelta(days=9))
        assert split.sizes() == (7, 2, 1)

    def test_cut_points_in_the_wrong_order_are_refused(self) -> None:
        with pytest.raises(InvalidInput, match="must not be after"):
            temporal_split_at(interactions([0, 0]), 5, 1)
