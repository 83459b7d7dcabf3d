"""`recplane train SPEC` and `recplane tune SPEC`: train a spec as a recorded run, or search its hyperparameters."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from rich.markup import escape

from recplane.cli.context import client_of
from recplane.cli.output import console, print_json
from recplane.errors import InvalidInput

if TYPE_CHECKING:
    from recplane.training import TrainSpec
    from recplane.training.runs import RunRecord

__all__ = ["train", "tune"]

SpecArg = Annotated[Path, typer.Argument(help="Training spec (YAML): dataset, train settings, optional search space.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a setting: KEY=VALUE (YAML value; dotted keys like params.dim=32)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """``["lr=0.01", "params.dim=32"]`` → ``{"lr": 0.01, "params.dim": 32}`` (values read as YAML)."""
    overrides: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"--set takes KEY=VALUE (e.g. --set epochs=5); got {pair!r}.")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def _spec(path: Path | None, overrides: dict[str, Any], workers: int | None) -> TrainSpec | None:
    from recplane.training import load_train_spec

    if path is None:
        if overrides or workers:
            raise InvalidInput("--set and --workers need a spec; with --resume alone the run's own spec is used.")
        return None
    spec = load_train_spec(path)
    if workers is not None:
        overrides = {**overrides, "workers": workers}
    return spec.with_overrides(overrides) if overrides else spec


def _summary(run: RunRecord) -> None:
    metrics = run.metrics
    best = "" if metrics.best_epoch is None else f" (best {metrics.valid_metric} at epoch {metrics.best_epoch + 1})"
    console.print(f"[bold green]Run {run.id}[/] {escape(run.name)}: {run.status}{best}")
    console.print(
        f"  data {escape(str(run.dataset))}@{run.dataset_version}, {metrics.train_seconds or 0:.1f}s, "
        f"{metrics.samples_per_second or 0:,.0f} samples/s"
    )
    from recplane.training.progress import headline

    console.print(f"  test: {headline({k: v for k, v in metrics.test.items() if v is not None})}")
    console.print(f"  files: {escape(run.artifacts_uri)}")
    console.print(f"  next: recplane runs show {run.id}")


def train(
    ctx: typer.Context,
    spec: Annotated[Path | None, typer.Argument(help="Training spec (YAML). Optional with --resume.")] = None,
    set_: SetOpt = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Data-parallel worker processes (torch.distributed, gloo on CPU).")
    ] = None,
    resume: Annotated[str | None, typer.Option(help="Continue this run from its latest checkpoint.")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    json: JsonOpt = False,
) -> None:
    """Train a model from a spec; the run (config, data version, code version, metrics, files) is recorded.

    A spec names a dataset and the trainer's settings, e.g.

      dataset: ml100k_ratings
      train: {model: mf, epochs: 30, params: {dim: 64}}

    Examples:

      recplane train mf.yaml

      recplane train mf.yaml --set epochs=5 --set params.dim=32 --workers 2

      recplane train --resume 3f9c2a1b7d04
    """
    chosen = _spec(spec, parse_overrides(set_), workers)
    trained = client_of(ctx).train(chosen, resume=resume, progress=progress and not json)
    if json:
        print_json(trained.run.model_dump(mode="json"))
    else:
        _summary(trained.run)


def tune(
    ctx: typer.Context,
    spec: SpecArg,
    trials: Annotated[int, typer.Option(min=1, help="Number of trials (each is a recorded run).")] = 20,
    out: Annotated[Path | None, typer.Option(help="Write the best spec here (default: <spec>.best.yaml).")] = None,
    study: Annotated[str | None, typer.Option(help="Study name (groups the trial runs).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the TPE sampler.")] = 0,
    set_: SetOpt = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = False,
    json: JsonOpt = False,
) -> None:
    """Search the spec's `search` space with Optuna (TPE sampler, median pruning on the valid metric per epoch).

    The spec gets a search section, e.g.

      search:
        lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
        params.dim: {type: categorical, choices: [32, 64, 128]}

    Every trial is a run (`recplane runs list --group STUDY`); the best spec is written for `recplane train`.

    Example: recplane tune mf.yaml --trials 20 --out mf.best.yaml
    """
    chosen = _spec(spec, parse_overrides(set_), None)
    assert chosen is not None
    result = client_of(ctx).tune(chosen, trials=trials, study=study, seed=seed, progress=progress)
    target = out or spec.with_suffix(".best.yaml")
    if result.best_spec is not None:
        result.write_best(target)
    if json:
        print_json(
            {
                "study": result.study,
                "metric": result.metric,
                "direction": result.direction,
                "best": result.best,
                "best_spec": str(target) if result.best_spec else None,
                "trials": result.trials,
            }
        )
        return
    for trial in result.trials:
        value = "—" if trial.value is None else f"{trial.value:.4f}"
        console.print(f"trial {trial.number}: {trial.state:8} {result.metric} {value}  {escape(str(trial.params))}")
    if result.best is None:
        console.print("[yellow]No trial completed.[/]")
        return
    console.print(
        f"[bold green]Best[/]: trial {result.best.number} ({result.metric} {result.best.value:.4f}, run "
        f"{result.best.run_id}) → {escape(str(target))}"
    )
