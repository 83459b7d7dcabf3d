"""`recplane demo`: the guided tour a newcomer runs first (``make demo``).

It shows the data foundation end to end — load MovieLens-100K (or synthetic data, saying so), version history,
statistics, a quality report, real-time ingestion with dead letters, schema evolution and a time-travel read —
then trains and evaluates two models on the versioned data (a retrieval model and a CTR ranker with item
features), each a recorded run with its exported inference model. Later capabilities extend the same tour.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.panel import Panel
from rich.rule import Rule

from recplane.cli.context import client_of, settings_of
from recplane.cli.output import console, print_records
from recplane.client import Client
from recplane.errors import RecplaneError

if TYPE_CHECKING:
    from recplane.training.runs import RunRecord

__all__ = ["demo"]


def _step(title: str) -> None:
    console.print(Rule(f"[bold cyan]{title}"))


def _load_data(client: Client, path: Path | None) -> str:
    from recplane.samples import MovieLensNotFound, load_movielens_100k
    from recplane.samples.loading import load_movielens_into, synthetic_movielens

    try:
        tables = load_movielens_100k(path)
    except MovieLensNotFound as exc:
        console.print(f"[yellow]MovieLens-100K not found[/] ({exc}).\nUsing seeded synthetic data in its shape.")
        tables = synthetic_movielens()
    console.print(f"Source: {tables.source}")
    with console.status("Validating and committing…"):
        results = load_movielens_into(client, tables, "ml100k", batch_id="demo")
    rows = [{"dataset": n, **r.model_dump()} for n, r in results.items()]
    print_records(rows, ["dataset", "accepted", "rejected", "version", "duplicate"], title="Loaded")
    return "ml100k_ratings"



def _demo_specs(ratings: str) -> list[dict[str, Any]]:
    """Settings that train in seconds on a laptop and still learn (see docs/training.md for tuned ones)."""
    return [
        {"name": "demo-mf", "dataset": ratings,
         "train": {"model": "mf", "epochs": 10, "lr": 0.01, "params": {"dim": 64}}},
        {"name": "demo-deepfm", "dataset": ratings, "item_features": "ml100k_items",
         "item_feature_columns": ["genres", "release_year"],
         "train": {"model": "deepfm", "epochs": 5, "lr": 0.001, "batch_size": 2048}},
    ]


def _train(client: Client, spec: dict[str, Any]) -> RunRecord:
    trained = client.train(spec, progress=True)
    run, manifest = trained.run, Path(trained.run.artifacts_uri) / "model" / "manifest.json"
    console.print(f"run [bold]{run.id}[/] {run.name}: {run.status} in {run.metrics.train_seconds:.1f}s, "
                  f"data {run.dataset}@{run.dataset_version}")
    if manifest.is_file():
        chosen = json.loads(manifest.read_text())
        latency = chosen["latency_ms"][chosen["form"]]["batch_1"]
        console.print(f"  exported for serving as {chosen['form']} ({latency:.3f} ms per single-row call): "
                      f"{manifest.parent}")
    return run


def _headline_metric(row_name: str) -> bool:
    """Test accuracy metrics over all users (``test.ndcg@10``, ``test.auc``), not segments or diagnostics."""
    from recplane.training.progress import is_headline

    part, _, name = row_name.partition(".")
    return part == "test" and is_headline(name)


def _live_events(now: datetime) -> list[dict[str, Any]]:
    good = [{"user_id": 1 + i, "item_id": 50 + i, "rating": 4.0, "ts": (now - timedelta(minutes=i)).isoformat()}
            for i in range(8)]
    bad = [{"user_id": 3, "item_id": 7, "rating": "five stars", "ts": now.isoformat()},
           {"item_id": 9, "rating": 3.0, "ts": now.isoformat()}]
    return good + bad


def demo(
    ctx: typer.Context,
    path: Annotated[Path | None, typer.Option(help="MovieLens source (RecBole wheel/folder, GroupLens).")] = None,
) -> None:
    """A guided tour: load data, versions, stats, quality, live ingestion, schema evolution, time travel,
    then training and evaluating two models as recorded runs."""
    started = time.perf_counter()
    settings = settings_of(ctx)
    console.print(Panel.fit(f"[bold]recplane demo[/]\nhome: {settings.home.resolve()}", border_style="cyan"))
    client = client_of(ctx)

    _step("1. Load MovieLens-100K as versioned datasets")
    ratings = _load_data(client, path)

    _step("2. Statistics")
    stats = client.stats(ratings)
    console.print(f"{stats.rows:,} rows, {stats.bytes:,} bytes in {stats.files} file(s)")
    print_records(stats.columns, ["name", "type", "null_rate", "min", "max", "distinct_estimate"])

    _step("3. Data quality report")
    report = client.check(ratings)
    print_records(report.results, ["name", "severity", "passed", "message"],
                  title=f"{ratings} v{report.version}: {'PASSED' if report.passed else 'FAILED'}")

    _step("4. Real-time ingestion: valid rows commit, invalid rows go to dead letters")
    result = client.ingest(ratings, _live_events(datetime.now(UTC)), batch_id="demo-live-1")
    console.print(f"accepted {result.accepted}, rejected {result.rejected} → version {result.version}")
    again = client.ingest(ratings, _live_events(datetime.now(UTC)), batch_id="demo-live-1")
    console.print(f"retry with the same Idempotency-Key: duplicate={again.duplicate}, nothing appended")
    print_records(client.read(f"{ratings}__rejected", columns=["reason", "raw"]).to_pylist(), ["reason", "raw"],
                  title="Dead letters")

    _step("5. Schema evolution: add a nullable column")
    spec = client.get_dataset(ratings).spec
    spec["columns"]["device"] = {"type": "string", "nullable": True, "description": "client device"}
    change = client.apply_dataset(spec)
    console.print(f"{change.action}: {change.message}")
    try:
        spec["columns"]["rating"] = {"type": "string", "nullable": False}
        client.apply_dataset(spec)
    except RecplaneError as exc:
        console.print(f"[yellow]refused as expected[/]: {exc.message}")

    _step("6. History and time travel")
    history = client.history(ratings)
    print_records(history, ["version", "operation", "rows_added", "schema_version", "author"],
                  title=f"History of {ratings}")
    first_data = min(v.version for v in history if (v.rows_added or 0) > 0)
    then = client.read(ratings, version=first_data)
    now_ = client.read(ratings)
    console.print(f"version {first_data}: {then.num_rows:,} rows, columns {then.column_names}")
    console.print(f"now (v{history[0].version}): {now_.num_rows:,} rows, columns {now_.column_names}")

    _step("7. Train and evaluate: recorded runs on the exact dataset version")
    runs = [_train(client, spec) for spec in _demo_specs(ratings)]
    comparison = client.compare_runs([run.id for run in runs])
    print_records(
        [{"metric": row.name, **{run.name: value for run, value in zip(runs, row.values, strict=True)}}
         for row in comparison.rows if _headline_metric(row.name)],
        ["metric", *(run.name for run in runs)],
        title="recplane runs compare",
    )

    console.print(Panel.fit(
        f"Done in {time.perf_counter() - started:.1f}s.\nTry: recplane --home {settings.home} datasets list\n"
        f"     recplane --home {settings.home} datasets history {ratings}\n"
        f"     recplane --home {settings.home} runs list\n"
        f"     recplane --home {settings.home} server --dev   (then open http://127.0.0.1:8000/docs)",
        title="next", border_style="green"))
