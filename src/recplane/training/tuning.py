"""Hyperparameter search with Optuna: TPE sampling, median pruning on the per-epoch validation metric.

Each trial is an ordinary training run (recorded in the catalog like any other, grouped under the study's
name). Two ways to run a study share the sampling, pruning and summary code here:

* :func:`tune` runs every trial in this process through a :class:`TrialRunner` (``Client.tune``,
  ``recplane tune``), the study in memory;
* a scheduler ``tune`` job runs every trial as its own ``train`` job. The study then lives in a journal file
  (:class:`SharedStudy`) that the coordinating job and the trial jobs open together: the coordinator asks for
  params and tells outcomes, each trial process reports its per-epoch metric through :func:`trial_pruning`.

Pruning works through the trainer's callbacks: after each epoch the trial reports the valid metric, and a trial
worse than the median of earlier trials at that epoch raises :class:`RunPruned`, which the run recorder stores as
a ``pruned`` run. Every trial's run id, job id, metric name and error are kept as Optuna user attributes, so a
study's summaries come from the study alone (after a restart too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from recplane.errors import InvalidInput
from recplane.training.callbacks import RunInfo, RunPruned, TrainCallback
from recplane.training.spec import SearchParam, TrainSpec

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial

    from recplane.training.trainer import EpochRecord

__all__ = [
    "SharedStudy",
    "TrialOutcome",
    "TrialRunner",
    "TrialSummary",
    "TuneResult",
    "trial_pruning",
    "trial_spec",
    "tune",
    "tune_result",
    "valid_metric_bigger",
]

Direction = Literal["maximize", "minimize"]
_STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}
_OWNER = "recplane_owner"  # study user attribute: who coordinates a shared study (a tune job's id)


@dataclass(frozen=True)
class TrialOutcome:
    """What a finished trial run reports: its run id, the valid metric's name and its best value."""

    run_id: str
    metric: str
    value: float | None


class TrialRunner(Protocol):
    """Runs one training spec as a recorded run (raising :class:`RunPruned` when a callback prunes it)."""

    def __call__(
        self, spec: TrainSpec, *, callbacks: Sequence[TrainCallback], group: str, tags: dict[str, str]
    ) -> TrialOutcome: ...


@dataclass(frozen=True)
class TrialSummary:
    """One trial: its number, outcome (complete | pruned | failed), value, sampled params, run and job ids."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    run_id: str | None
    error: str | None = None
    job_id: str | None = None


@dataclass
class TuneResult:
    """The study's outcome: the best trial and its spec (search removed), plus every trial."""

    study: str
    metric: str
    direction: str
    best: TrialSummary | None
    best_spec: TrainSpec | None
    trials: list[TrialSummary] = field(default_factory=list)

    @property
    def all_failed(self) -> bool:
        """True when there were trials and every one of them failed (none completed or was pruned)."""
        return bool(self.trials) and all(trial.state == "failed" for trial in self.trials)

    def write_best(self, path: str | Path) -> Path:
        """Write the best spec as YAML (ready for ``recplane train``)."""
        if self.best_spec is None:
            raise InvalidInput(f"Study {self.study!r} has no completed trial; there is no best config to write.")
        target = Path(path)
        target.write_text(self.best_spec.to_yaml())
        return target


class _Pruning(TrainCallback):
    """Reports the valid metric to the trial after each epoch and stops the run when Optuna says prune."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.metric = ""

    def on_train_start(self, info: RunInfo) -> None:
        self.metric = info.valid_metric

    def on_epoch_end(self, record: EpochRecord) -> None:
        value = record.valid.get(self.metric)
        if value is None:
            return
        self.trial.report(value, record.epoch)
        if self.trial.should_prune():
            raise RunPruned(f"pruned after epoch {record.epoch}: {self.metric}={value:.5f} is worse than the median")


def _suggest(trial: optuna.Trial, name: str, param: SearchParam) -> Any:
    if param.type == "categorical":
        return trial.suggest_categorical(name, param.choices or [])
    low, high = float(param.low or 0.0), float(param.high or 0.0)
    if param.type == "int":
        step = int(param.step or 1)
        return trial.suggest_int(name, int(low), int(high), step=step, log=param.log)
    return trial.suggest_float(name, low, high, log=param.log, step=param.step)


def _suggest_all(trial: optuna.Trial, search: dict[str, SearchParam]) -> dict[str, Any]:
    return {key: _suggest(trial, key, param) for key, param in search.items()}


def trial_spec(spec: TrainSpec, params: dict[str, Any]) -> TrainSpec:
    """The spec one trial trains: the sampled ``params`` applied, the search space removed."""
    return spec.with_overrides(params).model_copy(update={"search": {}})


def valid_metric_bigger(spec: TrainSpec) -> bool:
    """Whether the spec's validation metric grows as the model improves (MRR@10 and AUC do)."""
    from recplane.training.protocol import default_protocol

    return default_protocol(spec.train_config().kind).valid_metric_bigger


def _pruner(warmup_epochs: int) -> optuna.pruners.BasePruner:
    """The same pruner in every process of a study: median of earlier trials, after two trials and the warm-up."""
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=warmup_epochs)


def _quiet() -> None:
    import optuna

    # Failed trials are reported in the result; optuna would also log each one with its traceback.
    optuna.logging.set_verbosity(optuna.logging.ERROR)


def _new_study(
    name: str, direction: Direction, *, seed: int, warmup_epochs: int, storage: BaseStorage | None = None
) -> optuna.Study:
    import optuna

    _quiet()
    return optuna.create_study(
        study_name=name,
        storage=storage,
        direction=direction,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=_pruner(warmup_epochs),
        load_if_exists=storage is not None,
    )


def _summary(trial: FrozenTrial) -> TrialSummary:
    attrs = trial.user_attrs
    state = _STATES.get(trial.state.name, trial.state.name.lower())
    return TrialSummary(
        number=trial.number,
        state=state,
        value=trial.value if state == "complete" else None,
        params=dict(trial.params),
        run_id=attrs.get("run_id"),
        error=attrs.get("error"),
        job_id=attrs.get("job_id"),
    )


def tune_result(spec: TrainSpec, study: optuna.Study) -> TuneResult:
    """The outcome of a study so far: every trial's summary, the best complete trial and its spec."""
    frozen = sorted(study.get_trials(deepcopy=False), key=lambda trial: trial.number)
    summaries = [_summary(trial) for trial in frozen]
    metrics = sorted({str(trial.user_attrs["metric"]) for trial in frozen if trial.user_attrs.get("metric")})
    direction = study.direction.name.lower()
    complete = [s for s in summaries if s.state == "complete" and s.value is not None]
    best = None
    if complete:
        sign = 1.0 if direction == "maximize" else -1.0
        best = max(complete, key=lambda s: sign * (s.value or 0.0))
    best_spec = trial_spec(spec, best.params) if best else None
    return TuneResult(study.study_name, ", ".join(metrics), direction, best, best_spec, summaries)


def _direction(bigger: bool) -> Direction:
    return "maximize" if bigger else "minimize"


def tune(
    spec: TrainSpec,
    *,
    trials: int,
    run_trial: TrialRunner,
    metric_bigger: bool = True,
    study: str | None = None,
    seed: int = 0,
    warmup_epochs: int = 2,
    timeout_seconds: float | None = None,
) -> TuneResult:
    """Search ``spec.search`` for ``trials`` trials in this process; every trial runs through ``run_trial``.

    ``metric_bigger``: the direction of the model kind's valid metric (MRR@10 and AUC grow). Pruning starts
    after ``warmup_epochs`` epochs and after the first two trials have finished.
    """
    import optuna

    if not spec.search:
        raise InvalidInput("The spec has no 'search' section: add one (e.g. lr: {type: float, low: 1e-4, high: 1e-2}).")
    if trials < 1:
        raise InvalidInput(f"trials must be >= 1; got {trials}.")
    name = study or f"tune-{spec.run_name}"
    optuna_study = _new_study(name, _direction(metric_bigger), seed=seed, warmup_epochs=warmup_epochs)

    def objective(trial: optuna.Trial) -> float:
        params = _suggest_all(trial, spec.search)
        tags = {**spec.tags, "study": name, "trial": str(trial.number)}
        try:
            outcome = run_trial(trial_spec(spec, params), callbacks=[_Pruning(trial)], group=name, tags=tags)
        except RunPruned as exc:
            _set_attrs(trial, run_id=exc.run_id, error=str(exc))
            raise optuna.TrialPruned(str(exc)) from exc
        except Exception as exc:
            # One bad corner of the space (say, a diverging lr) must not end the study; it is recorded.
            _set_attrs(trial, error=f"{type(exc).__name__}: {exc}")
            raise
        _set_attrs(trial, run_id=outcome.run_id, metric=outcome.metric)
        if outcome.value is None:
            _set_attrs(trial, error="no valid metric")
            raise InvalidInput(f"Trial {trial.number} produced no validation metric; cannot rank it.")
        return outcome.value

    optuna_study.optimize(objective, n_trials=trials, timeout=timeout_seconds, catch=(Exception,))
    result = tune_result(spec, optuna_study)
    if result.all_failed:
        raise InvalidInput(f"Every trial of study {name!r} failed; the first error: {result.trials[0].error}")
    return result


def _set_attrs(trial: optuna.Trial, **attrs: str | None) -> None:
    for key, value in attrs.items():
        if value is not None:
            trial.set_user_attr(key, value)


def _journal(path: Path) -> BaseStorage:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


class SharedStudy:
    """A study in a journal file, shared by the process that coordinates it and the processes running its trials.

    The coordinator (``owner``: a tune job's id) asks for params and tells outcomes; the journal keeps every trial,
    so a restarted coordinator finds the finished ones and the ones still in flight (``running``). A study of the
    same name coordinated by someone else is refused rather than silently continued.
    """

    def __init__(
        self, path: Path, name: str, *, bigger: bool, owner: str, seed: int = 0, warmup_epochs: int = 2
    ) -> None:
        self.path, self.name = Path(path), name
        self.storage = _journal(self.path)
        self.study = _new_study(name, _direction(bigger), seed=seed, warmup_epochs=warmup_epochs,
                                storage=self.storage)
        found = self.study.user_attrs.get(_OWNER)
        if found is None:
            self.study.set_user_attr(_OWNER, owner)
        elif found != owner:
            raise InvalidInput(f"Study {name!r} in {self.path} belongs to tune job {found}, not {owner}; give this "
                               "search its own journal file.")
        if self.study.direction.name.lower() != _direction(bigger):
            raise InvalidInput(f"Study {name!r} in {self.path} was created to {self.study.direction.name.lower()}; "
                               f"this spec's metric needs {_direction(bigger)}.")
        self._study_id = self.storage.get_study_id_from_name(name)

    def asked(self) -> int:
        """How many trials the study has (finished or not)."""
        return len(self.study.get_trials(deepcopy=False))

    def in_flight(self) -> list[tuple[int, dict[str, Any]]]:
        """Trials asked for but not told yet: number and params (after a restart, the ones to wait for)."""
        from optuna.trial import TrialState

        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return [(trial.number, dict(trial.params)) for trial in running]

    def ask(self, search: dict[str, SearchParam]) -> tuple[int, dict[str, Any]]:
        """A new trial: its number and sampled params."""
        trial = self.study.ask()
        return trial.number, _suggest_all(trial, search)

    def note(self, number: int, **attrs: str | None) -> None:
        """Remember facts about a trial (its job id, run id, metric name, error) in the journal."""
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self._study_id, number)
        for key, value in attrs.items():
            if value is not None:
                self.storage.set_trial_user_attr(trial_id, key, value)

    def complete(self, number: int, value: float) -> None:
        """The trial finished with this best valid value."""
        self.study.tell(number, value, skip_if_finished=True)

    def pruned(self, number: int) -> None:
        """The trial's run was pruned."""
        from optuna.trial import TrialState

        self.study.tell(number, state=TrialState.PRUNED, skip_if_finished=True)

    def failed(self, number: int) -> None:
        """The trial's job failed, was cancelled, or its run produced no valid metric."""
        from optuna.trial import TrialState

        self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)

    def result(self, spec: TrainSpec) -> TuneResult:
        """Every trial so far and the best one."""
        return tune_result(spec, self.study)


def trial_pruning(path: Path, study: str, number: int, *, warmup_epochs: int = 2) -> TrainCallback:
    """The pruning callback of trial ``number`` of the shared study in the journal at ``path``, for the process
    that trains it: it reports each epoch's valid metric and prunes against the other trials' curves."""
    import optuna

    _quiet()
    storage = _journal(Path(path))
    loaded = optuna.load_study(study_name=study, storage=storage, sampler=optuna.samplers.RandomSampler(),
                               pruner=_pruner(warmup_epochs))
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study), number)
    return _Pruning(optuna.trial.Trial(loaded, trial_id))
