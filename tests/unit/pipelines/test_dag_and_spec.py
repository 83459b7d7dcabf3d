"""Pipeline specs: DAG validation with clear errors, the Python and YAML forms, references between steps."""

from __future__ import annotations

import pytest

from recplane.errors import InvalidSpec
from recplane.pipelines import DatasetRef, Pipeline, PipelineSpec, RunRef, load_pipeline, step
from recplane.pipelines.dag import resolve_value, topological_order
from recplane.pipelines.spec import check_functions

STEPS = "tests.fixtures.pipelines.steps"


def _spec(steps: list[dict[str, object]], **extra: object) -> PipelineSpec:
    return load_pipeline({"name": "p", "steps": steps, **extra})


def test_steps_are_ordered_after_what_they_reference_and_need() -> None:
    spec = _spec([
        {"name": "c", "uses": f"{STEPS}:double", "with": {"log": "x", "value": "${steps.b}"}},
        {"name": "a", "uses": f"{STEPS}:make_number", "with": {"log": "x", "value": 1}},
        {"name": "b", "uses": f"{STEPS}:double", "with": {"log": "x", "value": "${steps.a}"}, "needs": []},
        {"name": "d", "uses": "noop", "needs": ["c", "a"]},
    ])
    order = spec.order()
    assert order.index("a") < order.index("b") < order.index("c") < order.index("d")


def test_a_cycle_is_refused_naming_its_steps() -> None:
    with pytest.raises(InvalidSpec, match=r"cycle: (a → b → a|b → a → b)"):
        _spec([
            {"name": "a", "uses": "noop", "with": {"value": "${steps.b}"}},
            {"name": "b", "uses": "noop", "with": {"value": "${steps.a}"}},
        ])


def test_a_reference_to_an_unknown_step_or_param_is_refused() -> None:
    with pytest.raises(InvalidSpec, match="depends on 'nope', which is not a step"):
        _spec([{"name": "a", "uses": "noop", "with": {"value": "${steps.nope.key}"}}])
    with pytest.raises(InvalidSpec, match=r"\$\{params.day\} names no declared param"):
        _spec([{"name": "a", "uses": "noop", "with": {"value": "${params.day}"}}])
    with pytest.raises(InvalidSpec, match="step names must be unique"):
        _spec([{"name": "a", "uses": "noop"}, {"name": "a", "uses": "noop"}])


def test_a_missing_or_unknown_input_is_refused_when_applied() -> None:
    missing = _spec([{"name": "a", "uses": f"{STEPS}:double", "with": {"log": "x"}}])
    with pytest.raises(InvalidSpec, match="needs input 'value'"):
        check_functions(missing)
    unknown = _spec([{"name": "a", "uses": f"{STEPS}:double", "with": {"log": "x", "value": 1, "speed": 2}}])
    with pytest.raises(InvalidSpec, match="takes no input 'speed'"):
        check_functions(unknown)
    with pytest.raises(InvalidSpec, match="Cannot import"):
        check_functions(_spec([{"name": "a", "uses": "no_such_module_xyz:f"}]))


@step
def produce_run() -> RunRef:
    return RunRef("r1")


@step(inline=True)
def consume_dataset(data: DatasetRef) -> int:
    return 0


def test_incompatible_reference_types_between_steps_are_refused() -> None:
    with Pipeline("typed") as typed:
        consume_dataset(data=produce_run())
    with pytest.raises(InvalidSpec, match="wants a dataset reference, but step 'produce_run' returns a run"):
        check_functions(typed.spec)


def test_steps_defined_in_main_must_be_inline_or_importable() -> None:
    spec = _spec([{"name": "a", "uses": f"{STEPS}:double", "with": {"log": "x", "value": 1}}])
    check_functions(spec)  # an importable module is fine for a process step


def test_the_python_form_compiles_to_the_yaml_form() -> None:
    with Pipeline("nightly", params={"day": "2026-11-01"}, schedule="0 3 * * *", triggers=["ratings"]) as p:
        first = produce_run()
        consume_dataset(data=DatasetRef("ratings"), needs=[first])
        produce_run()
    spec = p.spec
    assert [s.name for s in spec.steps] == ["produce_run", "consume_dataset", "produce_run_2"]
    assert spec.step("consume_dataset").needs == ["produce_run"]
    assert spec.step("consume_dataset").with_["data"] == {"$ref": "dataset", "name": "ratings", "version": None}
    assert spec.step("consume_dataset").inline
    again = load_pipeline(spec.to_yaml())
    assert again == spec
    assert again.schedule == "0 3 * * *" and again.triggers[0].dataset == "ratings"


def test_a_param_must_be_declared_in_python_too() -> None:
    with Pipeline("p", params={"day": "x"}) as p, pytest.raises(InvalidSpec, match="declares no param 'days'"):
        p.params.days  # noqa: B018


def test_a_step_called_outside_a_pipeline_just_runs() -> None:
    assert produce_run() == RunRef("r1")


def test_an_invalid_cron_schedule_is_refused_at_load() -> None:
    with pytest.raises(InvalidSpec, match="outside 0-23 in the hour field"):
        _spec([{"name": "a", "uses": "noop"}], schedule="0 25 * * *")


def test_references_resolve_whole_values_paths_and_text() -> None:
    outputs = {"a": {"run": {"id": "r9"}, "n": 3}}
    value = {"whole": "${steps.a}", "path": "${steps.a.run.id}", "text": "n=${steps.a.n} day=${params.day}",
             "list": ["${params.day}", 1]}
    resolved = resolve_value(value, {"day": "2026-11-01"}, outputs)
    assert resolved == {"whole": outputs["a"], "path": "r9", "text": "n=3 day=2026-11-01",
                        "list": ["2026-11-01", 1]}


def test_topological_order_keeps_declaration_order_among_independent_steps() -> None:
    assert topological_order({"x": [], "y": [], "z": ["x"]}) == ["x", "y", "z"]
