"""Hyperparameter search with Optuna: TPE sampling, median pruning on the per-epoch validation metric.

Each trial is an ordinary training run (recorded in the catalog like any other, grouped under the study's
name), so a trial can later be handed to the scheduler as a job without changing this module: ``tune`` only
needs something with the :class:`TrialRunner` shape. Pruning works through the trainer's callbacks: after
each epoch the trial reports the valid metric, and a trial below the median of earlier trials at that epoch
raises :class:`RunPruned`, which the runner records as a ``pruned`` run.
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

    from recplane.training.trainer import EpochRecord

__all__ = ["TrialOutcome", "TrialRunner", "TrialSummary", "TuneResult", "tune"]


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
    """One trial: its number, outcome (complete | pruned | failed), value, sampled params and run id."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    run_id: str | None
    error: str | None = None


@dataclass
class TuneResult:
    """The study's outcome: the best trial and its spec (search removed), plus every trial."""

    study: str
    metric: str
    direction: str
    best: TrialSummary | None
    best_spec: TrainSpec | None
    trials: list[TrialSummary] = field(default_factory=list)

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
            raise RunPruned(f"pruned after epoch {record.epoch}: {self.metric}={value:.5f} is below the median")


def _suggest(trial: optuna.Trial, name: str, param: SearchParam) -> Any:
    if param.type == "categorical":
        return trial.suggest_categorical(name, param.choices or [])
    low, high = float(param.low or 0.0), float(param.high or 0.0)
    if param.type == "int":
        step = int(param.step or 1)
        return trial.suggest_int(name, int(low), int(high), step=step, log=param.log)
    return trial.suggest_float(name, low, high, log=param.log, step=param.step)


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
    """Search ``spec.search`` for ``trials`` trials; every trial runs through ``run_trial``.

    ``metric_bigger``: the direction of the model kind's valid metric (MRR@10 and AUC grow). Pruning starts
    after ``warmup_epochs`` epochs and after the first two trials have finished.
    """
    import optuna

    if not spec.search:
        raise InvalidInput("The spec has no 'search' section: add one (e.g. lr: {type: float, low: 1e-4, high: 1e-2}).")
    if trials < 1:
        raise InvalidInput(f"trials must be >= 1; got {trials}.")
    # Failed trials are reported in the result; optuna would also log each one with its traceback.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    name = study or f"tune-{spec.run_name}"
    direction: Literal["maximize", "minimize"] = "maximize" if metric_bigger else "minimize"
    optuna_study = optuna.create_study(
        study_name=name,
        direction=direction,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=warmup_epochs),
    )
    summaries: list[TrialSummary] = []
    metrics: set[str] = set()

    def objective(trial: optuna.Trial) -> float:
        params = {key: _suggest(trial, key, param) for key, param in spec.search.items()}
        trial_spec = spec.with_overrides(params).model_copy(update={"search": {}})
        tags = {**spec.tags, "study": name, "trial": str(trial.number)}
        try:
            outcome = run_trial(trial_spec, callbacks=[_Pruning(trial)], group=name, tags=tags)
        except RunPruned as exc:
            summaries.append(TrialSummary(trial.number, "pruned", None, params, exc.run_id, str(exc)))
            raise optuna.TrialPruned(str(exc)) from exc
        except Exception as exc:
            # One bad corner of the space (say, a diverging lr) must not end the study; it is recorded.
            summaries.append(TrialSummary(trial.number, "failed", None, params, None, f"{type(exc).__name__}: {exc}"))
            raise
        metrics.add(outcome.metric)
        if outcome.value is None:
            summaries.append(TrialSummary(trial.number, "failed", None, params, outcome.run_id, "no valid metric"))
            raise InvalidInput(f"Trial {trial.number} produced no validation metric; cannot rank it.")
        summaries.append(TrialSummary(trial.number, "complete", outcome.value, params, outcome.run_id))
        return outcome.value

    optuna_study.optimize(objective, n_trials=trials, timeout=timeout_seconds, catch=(Exception,))
    complete = [s for s in summaries if s.state == "complete" and s.value is not None]
    if not complete and summaries and all(s.state == "failed" for s in summaries):
        raise InvalidInput(f"Every trial of study {name!r} failed; the first error: {summaries[0].error}")
    best = None
    if complete:
        sign = 1.0 if metric_bigger else -1.0
        best = max(complete, key=lambda s: sign * (s.value or 0.0))
    best_spec = spec.with_overrides(best.params).model_copy(update={"search": {}}) if best else None
    return TuneResult(name, ", ".join(sorted(metrics)), direction, best, best_spec, summaries)
