"""Independent point-in-time reference for the feature-store benchmark, and the row-by-row comparison of outputs.

Every engine's training set (recplane's, Feast+DuckDB, Feast's file store) is checked against this answer. It is
deliberately plain pandas, sharing no code with any engine, and states the semantics once:

    for each label row and each feature view, take the feature row of the same entity with the greatest
    ``(event_ts, created_ts)`` such that ``event_ts <= label_ts`` (and, when the view has a TTL,
    ``label_ts - event_ts <= ttl``; and, with ``exclude_created_after_label``, ``created_ts <= label_ts``).
    No such row -> every feature of that view is null. Every label row is kept, in order, duplicates included.

Two implementations of that sentence cross-check each other: ``merge_asof`` (fast: ties resolved beforehand by
keeping the latest ``created_ts`` per ``(entity, event_ts)``) and ``brute_force`` (join every label to every row
of its entity, filter, take the maximum; obviously correct, used for the self-test and for the backfill-safety
option, which ``merge_asof`` cannot express). ``python reference.py --self-test`` checks both on hand-made ties,
TTL and late-arrival cases and against each other on generated data.

It runs under pandas 2.x (the Feast peer's venv) and 3.x (recplane's), and never imports recplane. CLI::

    python reference.py DATA_DIR [--labels N] --out expected.parquet      # the correct training set
    python reference.py DATA_DIR [--labels N] --compare actual.parquet    # mismatch counts as JSON
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
ROW = "_label_row"


@dataclass(frozen=True)
class View:
    """One feature table as the reference sees it: its entity key, feature columns and optional TTL."""

    table: pd.DataFrame
    key: str
    columns: tuple[str, ...]
    ttl: timedelta | None = None
    event_ts: str = "event_ts"
    created_ts: str = "created_ts"


def _label_frame(labels: pd.DataFrame, key: str, label_ts: str) -> pd.DataFrame:
    frame = labels[[key, label_ts]].copy()
    frame[ROW] = np.arange(len(frame))
    return frame


def _as_of(labels: pd.DataFrame, view: View, label_ts: str) -> pd.DataFrame:
    """One view's values per label row (index = label position) via merge_asof; ties pre-resolved."""
    rows = view.table[[view.key, view.event_ts, view.created_ts, *view.columns]]
    rows = rows.sort_values([view.key, view.event_ts, view.created_ts], kind="stable")
    rows = rows.drop_duplicates([view.key, view.event_ts], keep="last").sort_values(view.event_ts, kind="stable")
    rows = rows.rename(columns={view.key: "_key"})
    left = _label_frame(labels, view.key, label_ts).rename(columns={view.key: "_key"})
    left[label_ts] = left[label_ts].astype(rows[view.event_ts].dtype)
    left = left.sort_values(label_ts, kind="stable")
    joined = pd.merge_asof(
        left, rows, left_on=label_ts, right_on=view.event_ts, by="_key", direction="backward", allow_exact_matches=True
    )
    if view.ttl is not None:
        expired = (joined[label_ts] - joined[view.event_ts]) > pd.Timedelta(view.ttl)
        joined.loc[expired, list(view.columns)] = None
    return joined.set_index(ROW).sort_index()[list(view.columns)]


def brute_force_view(
    labels: pd.DataFrame, view: View, label_ts: str, exclude_created_after_label: bool = False, chunk: int = 200_000
) -> pd.DataFrame:
    """One view's values per label row by join -> filter -> max (event_ts, created_ts); chunked over labels."""
    rows = view.table[[view.key, view.event_ts, view.created_ts, *view.columns]]
    left_all = _label_frame(labels, view.key, label_ts)
    left_all[label_ts] = left_all[label_ts].astype(rows[view.event_ts].dtype)
    parts = []
    for start in range(0, len(left_all), chunk):
        cand = left_all.iloc[start : start + chunk].merge(rows, on=view.key, how="inner")
        ok = cand[view.event_ts] <= cand[label_ts]
        if view.ttl is not None:
            ok &= (cand[label_ts] - cand[view.event_ts]) <= pd.Timedelta(view.ttl)
        if exclude_created_after_label:
            ok &= cand[view.created_ts] <= cand[label_ts]
        cand = cand[ok].sort_values([ROW, view.event_ts, view.created_ts], kind="stable")
        parts.append(cand.drop_duplicates(ROW, keep="last").set_index(ROW)[list(view.columns)])
    found = pd.concat(parts) if parts else pd.DataFrame(columns=list(view.columns))
    return found.reindex(pd.RangeIndex(len(labels)))


def training_set(
    labels: pd.DataFrame,
    views: Sequence[View],
    label_ts: str = "label_ts",
    exclude_created_after_label: bool = False,
    method: str = "asof",
) -> pd.DataFrame:
    """The correct training set: ``labels`` (all rows, same order) plus every view's feature columns."""
    out = labels.reset_index(drop=True).copy()
    for view in views:
        if method == "asof" and not exclude_created_after_label:
            values = _as_of(labels, view, label_ts)
        else:
            values = brute_force_view(labels, view, label_ts, exclude_created_after_label)
        for column in view.columns:
            out[column] = values[column].to_numpy()
    return out


def latest_values(view: View) -> pd.DataFrame:
    """Per entity, the values of its latest row (greatest ``(event_ts, created_ts)``): what a full
    materialization must serve online (TTL aside, which depends on the reading time)."""
    rows = view.table.sort_values([view.key, view.event_ts, view.created_ts], kind="stable")
    return rows.drop_duplicates(view.key, keep="last")[[view.key, *view.columns]].reset_index(drop=True)


def load_views(data_dir: str | Path) -> list[View]:
    """The benchmark's two views (users, items) with the TTLs recorded in ``meta.json``."""
    data = Path(data_dir)
    spec = json.loads((data / "meta.json").read_text())["spec"]
    views = []
    for name, key in (("users", "user_id"), ("items", "item_id")):
        ttl_seconds = spec[f"{name[:-1]}_ttl_seconds"]
        views.append(
            View(
                table=pq.read_table(data / f"{name}.parquet").to_pandas(),
                key=key,
                columns=tuple(spec["features"][name]),
                ttl=None if ttl_seconds is None else timedelta(seconds=ttl_seconds),
            )
        )
    return views


def load_labels(data_dir: str | Path, rows: int | None = None) -> pd.DataFrame:
    """The first ``rows`` label rows (a uniform sample: labels are written in random order)."""
    table = pq.read_table(Path(data_dir) / "labels.parquet")
    return (table if rows is None else table.slice(0, rows)).to_pandas()


def reference_for(
    data_dir: str | Path, rows: int | None = None, exclude_created_after_label: bool = False
) -> pd.DataFrame:
    """The correct training set for the benchmark data in ``data_dir``."""
    return training_set(
        load_labels(data_dir, rows), load_views(data_dir), exclude_created_after_label=exclude_created_after_label
    )


def _normalised(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(values, is_null) with numbers as float64 and everything else as str, so int64/float64/Arrow dtypes compare."""
    null = values.isna().to_numpy()
    if pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("float64").to_numpy(na_value=np.nan), null
    return values.astype(object).where(~null, "").astype(str).to_numpy(), null


def _equal(expected: pd.Series, actual: pd.Series) -> np.ndarray:
    e, e_null = _normalised(expected)
    a, a_null = _normalised(actual)
    if e.dtype.kind == "f" and a.dtype.kind == "f":
        same = np.isclose(e, a, rtol=1e-12, atol=0.0)
    else:
        same = e.astype(str) == a.astype(str)
    return np.where(e_null | a_null, e_null & a_null, same)


def compare(
    expected: pd.DataFrame, actual: pd.DataFrame, features: Sequence[str], key: str = "label_id", examples: int = 3
) -> dict[str, Any]:
    """Row-by-row mismatch counts of ``actual`` against ``expected``, matched on the label row key."""
    dup = int(actual[key].duplicated().sum())
    actual_once = actual.drop_duplicates(key, keep="first").set_index(key)
    present = expected[key].isin(actual_once.index).to_numpy()
    exp = expected[present].reset_index(drop=True)
    act = actual_once.loc[exp[key].to_numpy()].reset_index()
    report: dict[str, Any] = {
        "rows_expected": len(expected),
        "rows_returned": len(actual),
        "rows_missing": int((~present).sum()),
        "rows_extra": int((~actual_once.index.isin(expected[key])).sum()) + dup,
        "mismatches": {},
        "examples": {},
    }
    total = 0
    for column in features:
        if column not in act.columns:
            report["mismatches"][column] = len(exp)
            total += len(exp)
            continue
        wrong = ~_equal(exp[column], act[column])
        report["mismatches"][column] = int(wrong.sum())
        total += int(wrong.sum())
        if wrong.any():
            rows = np.flatnonzero(wrong)[:examples]
            report["examples"][column] = [
                {
                    key: int(exp[key].iloc[i]),
                    "expected": _plain(exp[column].iloc[i]),
                    "actual": _plain(act[column].iloc[i]),
                }
                for i in rows
            ]
    report["value_mismatches"] = total
    report["rows_with_any_mismatch"] = int(
        sum(~_equal(exp[c], act[c]) for c in features if c in act.columns).astype(bool).sum()
        if len(exp) and any(c in act.columns for c in features)
        else 0
    )
    report["identical"] = report["rows_missing"] == 0 and report["rows_extra"] == 0 and total == 0
    return report


def _plain(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    return value.item() if hasattr(value, "item") else value


def _case(rows: list[tuple[int, int, int, Any]], labels: list[tuple[int, int]], ttl: int | None = None) -> tuple:
    """A tiny hand-made view (entity, event s, created s, value) and labels (entity, label s)."""
    t0 = pd.Timestamp("2024-01-01", tz="UTC")
    table = pd.DataFrame(
        {
            "k": [r[0] for r in rows],
            "event_ts": [t0 + pd.Timedelta(seconds=r[1]) for r in rows],
            "created_ts": [t0 + pd.Timedelta(seconds=r[2]) for r in rows],
            "v": pd.array([r[3] for r in rows], dtype="object"),
        }
    )
    lab = pd.DataFrame({"k": [lb[0] for lb in labels], "label_ts": [t0 + pd.Timedelta(seconds=lb[1]) for lb in labels]})
    view = View(table=table, key="k", columns=("v",), ttl=None if ttl is None else timedelta(seconds=ttl))
    return lab, view


def _check(name: str, got: pd.DataFrame, want: list[Any]) -> None:
    values = [None if pd.isna(v) else v for v in got["v"]]
    if values != want:
        raise AssertionError(f"self-test {name}: expected {want}, got {values}")


HAND_CASES: list[tuple[str, list[tuple[int, int, int, Any]], list[tuple[int, int]], int | None, bool, list[Any]]] = [
    # name, rows (entity, event, created, value), labels (entity, ts), ttl, exclude_created_after, expected
    (
        "tie: latest created wins, rows unordered",
        [(1, 10, 10, "a"), (1, 10, 12, "b"), (1, 10, 11, "c")],
        [(1, 9), (1, 10), (1, 15)],
        None,
        False,
        [None, "b", "b"],
    ),
    (
        "newer event beats a later-created older event",
        [(1, 10, 50, "old"), (1, 20, 20, "new")],
        [(1, 19), (1, 20), (1, 21)],
        None,
        False,
        ["old", "new", "new"],
    ),
    (
        "ttl inclusive, expiry gives null not an older value",
        [(1, 10, 10, "a"), (1, 20, 20, "b")],
        [(1, 15), (1, 25), (1, 26), (1, 30)],
        5,
        False,
        ["a", "b", None, None],
    ),
    (
        "missing entity gives null, label order and duplicates kept",
        [(1, 10, 10, "a")],
        [(2, 20), (1, 20), (1, 20)],
        None,
        False,
        [None, "a", "a"],
    ),
    ("a null value is the latest value", [(1, 10, 10, "a"), (1, 20, 20, None)], [(1, 25)], None, False, [None]),
    (
        "backfill safety: values created after the label are skipped",
        [(1, 10, 10, "a"), (1, 10, 30, "a2"), (1, 12, 40, "late")],
        [(1, 15), (1, 35), (1, 45)],
        None,
        True,
        ["a", "a2", "late"],
    ),
    (
        "without backfill safety the late row is used",
        [(1, 10, 10, "a"), (1, 10, 30, "a2"), (1, 12, 40, "late")],
        [(1, 15), (1, 35), (1, 45)],
        None,
        False,
        ["late", "late", "late"],
    ),
]


def self_test() -> dict[str, Any]:
    """Hand-made cases through both methods, then merge_asof == brute force on small generated data."""
    for name, rows, labels, ttl, exclude, want in HAND_CASES:
        lab, view = _case(rows, labels, ttl)
        methods = ("brute",) if exclude else ("asof", "brute")
        for method in methods:
            _check(
                f"{name} [{method}]",
                training_set(lab, [view], exclude_created_after_label=exclude, method=method),
                want,
            )
    data = _load_data_module()
    tables = data.generate(data.DataSpec.scaled(0.01, seed=11))
    with_features = _cross_check(tables, data)
    return {"hand_cases": len(HAND_CASES), "generated_labels": with_features["labels"], "cross_check": with_features}


def _cross_check(tables: dict[str, Any], data: Any) -> dict[str, Any]:
    spec = data.DataSpec.scaled(0.01, seed=11)
    views = [
        View(tables["users"].to_pandas(), "user_id", data.USER_FEATURES, timedelta(seconds=spec.user_ttl_seconds)),
        View(tables["items"].to_pandas(), "item_id", data.ITEM_FEATURES, None),
    ]
    labels = tables["labels"].to_pandas()
    features = [*data.USER_FEATURES, *data.ITEM_FEATURES]
    fast = training_set(labels, views, method="asof")
    slow = training_set(labels, views, method="brute")
    result = compare(slow, fast, features)
    if not result["identical"]:
        raise AssertionError(f"self-test: merge_asof and brute force disagree on generated data: {result}")
    filled = int(fast["u_score"].notna().sum())
    if filled == 0 or filled == len(fast):
        raise AssertionError("self-test: generated data should give both filled and null user features")
    return {"labels": len(labels), "user_rows_filled": filled, "identical": True}


def _load_data_module() -> Any:
    spec = importlib.util.spec_from_file_location("_features_bench_data", HERE / "data.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {HERE / 'data.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", nargs="?")
    parser.add_argument("--self-test", action="store_true")
    parser.add_argument("--labels", type=int, default=None, help="use the first N label rows")
    parser.add_argument("--exclude-created-after-label", action="store_true")
    parser.add_argument("--out", help="write the correct training set here (Parquet)")
    parser.add_argument("--compare", help="a training set (Parquet) to count mismatches of")
    args = parser.parse_args(argv)
    if args.self_test:
        print(json.dumps({"self_test": "ok", **self_test()}))
        return 0
    if not args.data_dir:
        parser.error("DATA_DIR is required unless --self-test")
    expected = reference_for(args.data_dir, args.labels, args.exclude_created_after_label)
    if args.out:
        expected.to_parquet(args.out, index=False)
    if args.compare:
        features = [c for v in load_views(args.data_dir) for c in v.columns]
        print(json.dumps(compare(expected, pd.read_parquet(args.compare), features), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
