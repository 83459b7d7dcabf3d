"""Dataset specs: YAML/dict parsing, type strings, and the errors that explain a bad spec."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from recplane.errors import InvalidSpec
from recplane.lake import load_spec
from recplane.lake.spec import arrow_type, parse_duration, type_string

YAML = """
name: ratings
team: recsys
event_time: ts
columns:
  user_id: {type: int64, nullable: false}
  rating: float32
  ts: timestamp
  genres: list<string>
  props: map<string, string>
  emb: vector<float32, 4>
  thumb: binary
retention: 90d
"""


def test_yaml_spec_parses_every_column_type() -> None:
    spec = load_spec(YAML)
    schema = spec.arrow_schema()
    assert schema.field("user_id").type == pa.int64() and not schema.field("user_id").nullable
    assert schema.field("emb").type == pa.list_(pa.float32(), 4)
    assert spec.storage_schema().field("emb").type == pa.list_(pa.float32())
    assert schema.field("props").type == pa.map_(pa.string(), pa.string())
    assert spec.retention_period is not None and spec.retention_period.days == 90


def test_spec_file_path_is_read(tmp_path: Path) -> None:
    path = tmp_path / "ratings.yaml"
    path.write_text(YAML)
    assert load_spec(path).name == "ratings"
    assert load_spec(str(path)).name == "ratings"


def test_unknown_type_names_the_type_and_lists_valid_ones() -> None:
    with pytest.raises(InvalidSpec, match=r"Unknown column type 'decimal'.*Valid types"):
        load_spec({"name": "x", "columns": {"a": "decimal"}})


def test_event_time_must_name_a_timestamp_column() -> None:
    with pytest.raises(InvalidSpec, match="event_time column 'a' must have type timestamp"):
        load_spec({"name": "x", "event_time": "a", "columns": {"a": "int64"}})


def test_unknown_reference_lists_the_columns() -> None:
    with pytest.raises(InvalidSpec, match=r"dedup_key names unknown column\(s\) \['b'\]"):
        load_spec({"name": "x", "dedup_key": ["b"], "columns": {"a": "int64"}})


def test_retention_needs_event_time() -> None:
    with pytest.raises(InvalidSpec, match="retention needs an event_time"):
        load_spec({"name": "x", "retention": "30d", "columns": {"a": "int64"}})


def test_bad_duration_shows_the_accepted_forms() -> None:
    with pytest.raises(InvalidSpec, match="90d, 12h"):
        parse_duration("three days")


def test_invalid_yaml_and_non_mapping_are_refused() -> None:
    with pytest.raises(InvalidSpec, match="not valid YAML"):
        load_spec("name: [unclosed\ncolumns: x")
    with pytest.raises(InvalidSpec, match="must be a mapping"):
        load_spec("- just\n- a list\n")


def test_uppercase_dataset_name_is_refused() -> None:
    with pytest.raises(InvalidSpec, match="name"):
        load_spec({"name": "Ratings", "columns": {"a": "int64"}})


_PRIMITIVE = st.sampled_from(
    ["bool", "int8", "int16", "int32", "int64", "float32", "float64", "string", "binary", "date", "timestamp"]
)
_TYPES = st.recursive(
    _PRIMITIVE,
    lambda inner: st.one_of(
        inner.map(lambda t: f"list<{t}>"),
        st.tuples(st.sampled_from(["string", "int64"]), inner).map(lambda kv: f"map<{kv[0]}, {kv[1]}>"),
        st.tuples(st.sampled_from(["float32", "float64"]), st.integers(1, 1024)).map(
            lambda fv: f"vector<{fv[0]}, {fv[1]}>"
        ),
    ),
    max_leaves=4,
)


@given(_TYPES)
def test_type_strings_round_trip_through_arrow(text: str) -> None:
    assert type_string(arrow_type(text)) == text
