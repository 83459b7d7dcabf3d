"""The shared study a tune job coordinates: a journal file that outlives its coordinator, refuses a second owner,
and prunes a trial trained elsewhere against the trials the coordinator told it about."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.fixtures.runs import tiny_config, tiny_interactions

from recplane.errors import InvalidInput
from recplane.training import train
from recplane.training.callbacks import RunPruned
from recplane.training.spec import SearchParam, TrainSpec
from recplane.training.tuning import SharedStudy, trial_pruning, trial_spec

SEARCH = {"lr": SearchParam(type="float", low=0.001, high=0.1, log=True)}
SPEC = TrainSpec.model_validate({"dataset": "ratings", "train": {"model": "mf", "epochs": 2}, "search": {
    "lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True}}})


def test_a_restarted_coordinator_finds_finished_and_in_flight_trials_in_the_journal(tmp_path: Path) -> None:
    journal = tmp_path / "tuning" / "s.journal"
    first = SharedStudy(journal, "s", bigger=True, owner="job-1", seed=1)
    zero, params0 = first.ask(SEARCH)
    one, params1 = first.ask(SEARCH)
    first.note(zero, job_id="j0")
    first.note(one, job_id="j1")
    first.note(zero, run_id="r0", metric="mrr@10")
    first.complete(zero, 0.25)

    again = SharedStudy(journal, "s", bigger=True, owner="job-1", seed=1)  # the coordinator, restarted
    assert again.asked() == 2
    assert again.in_flight() == [(one, params1)]
    result = again.result(SPEC)
    assert [(t.number, t.state, t.value, t.job_id, t.run_id) for t in result.trials] == [
        (0, "complete", 0.25, "j0", "r0"), (1, "running", None, "j1", None)]
    assert result.best is not None and result.best.params == params0 and result.metric == "mrr@10"
    assert result.best_spec == trial_spec(SPEC, params0) and result.best_spec.search == {}
    again.failed(one)
    assert again.result(SPEC).trials[1].state == "failed" and not again.in_flight()

    with pytest.raises(InvalidInput, match="belongs to tune job job-1, not job-2"):
        SharedStudy(journal, "s", bigger=True, owner="job-2")
    with pytest.raises(InvalidInput, match="was created to maximize"):
        SharedStudy(journal, "s", bigger=False, owner="job-1")


def test_a_trial_trained_in_another_process_is_pruned_against_the_told_trials(tmp_path: Path) -> None:
    journal = tmp_path / "s.journal"
    coordinator = SharedStudy(journal, "s", bigger=True, owner="tune", warmup_epochs=1)
    data = tiny_interactions(num_users=60)
    for lr in (0.05, 0.05):
        number, _ = coordinator.ask(SEARCH)
        pruning = trial_pruning(journal, "s", number, warmup_epochs=1)  # what the trial job's process opens
        result = train(data, tiny_config(lr=lr, epochs=3), callbacks=[pruning])
        assert result.best_valid is not None
        coordinator.complete(number, result.best_valid)

    number, _ = coordinator.ask(SEARCH)
    pruning = trial_pruning(journal, "s", number, warmup_epochs=1)
    with pytest.raises(RunPruned, match=r"pruned after epoch 1: mrr@10=.* is worse than the median"):
        train(data, tiny_config(lr=1e-6, epochs=3), callbacks=[pruning])
    coordinator.pruned(number)
    trials = coordinator.study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert sorted(trials[0].intermediate_values) == [0, 1, 2] and sorted(trials[2].intermediate_values) == [0, 1]
