"""Job and queue specs: YAML and dicts in, clear errors out; durations; kinds' checks at submission."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recplane.errors import InvalidInput, InvalidSpec
from recplane.scheduler.kinds import job_kind, load_callable
from recplane.scheduler.kinds.custom import as_result, prepare
from recplane.scheduler.spec import DEFAULT_QUEUE, load_job_spec, load_queue_specs, parse_duration


def test_a_job_spec_from_yaml_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("kind: custom\nentrypoint: json:dumps\nargs: {obj: [1, 2]}\nresources: {cpu: 2}\nworkers: 2\n")
    spec = load_job_spec(path)
    assert spec.queue == DEFAULT_QUEUE and spec.team == "default" and spec.priority == 0
    assert (spec.resources.cpu, spec.resources.memory_gb, spec.resources.gpu) == (2, 1, 0)
    assert spec.workers == 2 and spec.display_name == "custom:json:dumps"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"entrypoint": "not an entrypoint"}, "entrypoint"),
        ({"entrypoint": "json:dumps", "command": ["true"]}, "either entrypoint or command"),
        ({"workers": 0}, "workers"),
        ({"resources": {"cpu": -1}}, "resources.cpu"),
        ({"queue": "bad queue!"}, "queue"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_job_specs_name_the_field(data: dict[str, object], problem: str) -> None:
    with pytest.raises(InvalidSpec, match=problem):
        load_job_spec(data)


def test_queue_specs_one_or_many() -> None:
    (one,) = load_queue_specs({"name": "q", "team": "t", "nominal": {"cpu": 4}})
    assert one.borrowing_resources() is None and one.nominal.memory_gb == 0
    many = load_queue_specs("queues:\n  - {name: a, team: x, cohort: c, borrowing_limit: {cpu: 2}}\n"
                            "  - {name: b, team: y, budget: {window: 24h, cpu_hours: 5}}\n")
    assert [q.name for q in many] == ["a", "b"]
    limit = many[0].borrowing_resources()
    assert limit is not None and limit.cpu == 2 and math.isinf(limit.memory_gb)
    assert many[1].budget is not None and many[1].budget.window_delta == timedelta(hours=24)
    with pytest.raises(InvalidSpec, match="window"):
        load_queue_specs({"name": "q", "team": "t", "budget": {"window": "soon"}})
    with pytest.raises(InvalidSpec, match="'queues' must be the only key"):
        load_queue_specs({"queues": [], "name": "x"})


@given(st.integers(0, 10_000), st.sampled_from(["s", "m", "h", "d", "w"]))
def test_durations_parse(value: int, unit: str) -> None:
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    assert parse_duration(f"{value}{unit}") == timedelta(seconds=value * seconds)


def test_bad_durations_say_how_to_write_one() -> None:
    with pytest.raises(InvalidInput, match="7d"):
        parse_duration("a week")


def test_kinds_are_a_table_and_unknown_ones_are_refused() -> None:
    assert job_kind("train").launches_workers and job_kind("train").graceful_stop
    with pytest.raises(InvalidSpec, match=r"choose one of custom, evaluate, materialize, .*train, tune"):
        job_kind("shell")


def test_custom_jobs_check_their_entrypoint_and_args_at_submission() -> None:
    with pytest.raises(InvalidSpec, match="needs `entrypoint"):
        prepare(load_job_spec({"kind": "custom"}))
    with pytest.raises(InvalidSpec, match="Cannot import 'no_such_module_xyz'"):
        prepare(load_job_spec({"entrypoint": "no_such_module_xyz:run"}))
    with pytest.raises(InvalidSpec, match="cannot take args"):
        prepare(load_job_spec({"entrypoint": "json:loads", "args": {"nope": 1}}))
    assert prepare(load_job_spec({"entrypoint": "json:loads", "args": {"s": "[1]"}})).args == {"s": "[1]"}
    assert load_callable("os.path:join")("a", "b") == "a/b"


def test_results_are_json() -> None:
    assert as_result(None) is None
    assert as_result({"a": 1}) == {"a": 1}
    assert as_result(3) == {"value": 3}
    assert as_result(object())["value"].startswith("<object object")  # type: ignore[index]
