"""`recplane demo`: the guided tour a newcomer runs first (``make demo``).

It shows the data foundation end to end — load MovieLens-100K (or synthetic data, saying so), version history,
statistics, a quality report, real-time ingestion with dead letters, schema evolution and a time-travel read —
then the feature store (definitions over the ratings, a point-in-time training set, materialization and an online
lookup with its freshness), and trains and evaluates two models on the versioned data (a retrieval model, and a
CTR ranker on the feature service's training set plus item features), each a recorded run with its exported
inference model — then closes the loop: both models registered and promoted to ``production``, served by a real
``recplane serve`` process (retrieval, ranking on online features, rules, fallback; answers and latency shown)
and used for batch inference into a versioned dataset.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import pyarrow as pa
import pyarrow.compute as pc
import typer
from rich.panel import Panel
from rich.rule import Rule

from recplane.cli.context import client_of, settings_of
from recplane.cli.demo_serving import RETRIEVAL_MODEL, batch_predict, register_and_promote, serve_and_query
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


# Windows are relative to each label's time, so 30-day windows fit MovieLens' 1997-98 timestamps.
_DEMO_FEATURES = """
entities:
  - {name: user, join_keys: [user_id]}
  - {name: item, join_keys: [item_id]}
feature_views:
  - name: user_activity
    entities: [user]
    source: ml100k_ratings
    features:
      - {name: user_last_rating, column: rating}
      - {name: user_ratings_30d, agg: count, window: 30d}
      - {name: user_mean_rating_30d, agg: mean, column: rating, window: 30d}
  - name: item_popularity
    entities: [item]
    source: ml100k_ratings
    features:
      - {name: item_ratings_30d, agg: count, window: 30d}
      - {name: item_mean_rating_30d, agg: mean, column: rating, window: 30d}
feature_services:
  - {name: demo_ranker, features: ["user_activity:*", "item_popularity:*"]}
"""
_FEATURE_LAG = "1s"  # features as of 1 s before each rating, so that a rating never counts in its own features


_SHOWN_FEATURES = {"user_last_rating": "user last", "user_ratings_30d": "user n 30d",
                   "user_mean_rating_30d": "user mean 30d", "item_ratings_30d": "item n 30d",
                   "item_mean_rating_30d": "item mean 30d"}


def _rounded(value: Any) -> Any:
    return round(value, 2) if isinstance(value, float) else value


def _features(client: Client, ratings: str) -> None:
    plan = client.apply_features(_DEMO_FEATURES)
    console.print(plan.render())
    # The training set the ranker will train on, for a few ratings of one user: features as of each rating's time.
    sample = client.read(ratings, columns=["user_id", "item_id", "rating", "ts"])
    sample = sample.filter(pc.equal(sample["user_id"], 2)).sort_by("ts").slice(0, 5)
    at = pc.subtract(sample["ts"], pa.scalar(timedelta(seconds=1)))
    rows = client.training_set(sample.append_column("features_at", at), "demo_ranker", label_time_col="features_at")
    shown = [{"item": row["item_id"], "rating": row["rating"], "time": f"{row['ts']:%H:%M:%S}",
              **{label: _rounded(row[name]) for name, label in _SHOWN_FEATURES.items()}} for row in rows.to_pylist()]
    day = f"{sample['ts'][0].as_py():%Y-%m-%d}" if sample.num_rows else ""
    print_records(shown, ["item", "rating", "time", *_SHOWN_FEATURES.values()],
                  title=f"point-in-time training set of demo_ranker: user 2's first ratings ({day}), features as "
                        f"of {_FEATURE_LAG} before each")
    done = client.materialize(service="demo_ranker")
    print_records([v.model_dump() for v in done.views], ["view", "source_version", "entities", "rows_written"],
                  title=f"materialized to the online store in {done.seconds:.1f}s")
    found = client.online_features({"user_id": [1]}, ["user_activity:*"])
    now = datetime.now(UTC)
    values = ", ".join(f"{name}={_rounded(column[0])}" for name, column in found.values.items())
    ages = ", ".join(f"{view} {(now - times[0]).total_seconds():.0f}s ago" if times[0] else f"{view} -"
                     for view, times in found.event_times.items())
    console.print(f"online lookup of user 1 ({found.statuses[0]}): {values}\n  freshness (event time of the "
                  f"values): {ages}")


def _demo_specs(ratings: str) -> list[dict[str, Any]]:
    """Settings that train in seconds on a laptop and still learn (see docs/training.md for tuned ones)."""
    return [
        {"name": "demo-mf", "dataset": ratings,
         "train": {"model": "mf", "epochs": 10, "lr": 0.01, "params": {"dim": 64}}},
        {"name": "demo-deepfm",
         "training_set": {"labels": ratings, "features": "demo_ranker", "feature_lag": _FEATURE_LAG},
         "item_features": "ml100k_items", "item_feature_columns": ["genres", "release_year"],
         "train": {"model": "deepfm", "epochs": 5, "lr": 0.001, "batch_size": 2048}},
    ]


def _train_as_jobs(client: Client, specs: list[dict[str, Any]]) -> list[RunRecord]:
    """Each spec as a `train` job through the scheduler (admitted from the team's queue, run as its own process,
    accounted in the usage ledger); waits for all, then shows the jobs and their runs."""
    jobs = [client.submit_job({"kind": "train", "name": spec["name"], "args": {"spec": spec}}) for spec in specs]
    console.print("submitted " + ", ".join(f"[bold]{job.id}[/] ({job.name})" for job in jobs)
                  + f" — follow one with: recplane jobs logs -f {jobs[0].id}")
    with console.status("Training in scheduler jobs (each a process with its own progress log)…"):
        done = [client.wait_job(job.id, timeout=900) for job in jobs]
    failed = [job for job in done if job.status != "succeeded"]
    if failed:
        raise RecplaneError(f"Training job {failed[0].id} ended {failed[0].status}: {failed[0].error}; "
                            f"see `recplane jobs logs {failed[0].id}`.")
    print_records([job.model_dump() for job in done], ["id", "name", "kind", "queue", "status", "attempts"],
                  title="recplane jobs list")
    return [_show_run(client.get_run(str((job.result or {})["run_id"]))) for job in done]


def _show_run(run: RunRecord) -> RunRecord:
    manifest = Path(run.artifacts_uri) / "model" / "manifest.json"
    console.print(f"run [bold]{run.id}[/] {run.name}: {run.status} in {run.metrics.train_seconds:.1f}s, "
                  f"data {run.dataset}@{run.dataset_version}")
    if "feature_service" in run.tags:
        console.print(f"  features {run.tags['feature_service']}: views {run.tags['feature_views']}, "
                      f"sources {run.tags['feature_sources']} (row features: {run.config['row_feature_columns']})")
    if manifest.is_file():
        chosen = json.loads(manifest.read_text())
        latency = chosen["latency_ms"][chosen["form"]]["batch_1"]
        console.print(f"  exported for serving as {chosen['form']} ({latency:.3f} ms per single-row call): "
                      f"{manifest.parent}")
    return run


def _show_usage(client: Client) -> None:
    report = client.usage(since=timedelta(hours=1), group_by=("team", "kind"))
    rows = [{**row.group, "jobs": row.jobs, "cpu_seconds": round(row.cpu_hours * 3600, 1),
             "memory_gb_seconds": round(row.memory_gb_hours * 3600, 1), "wall_seconds": round(row.wall_hours * 3600, 1),
             f"cost ({report.currency})": round(row.cost, 6)} for row in report.rows]
    print_records(rows, list(rows[0]) if rows else ["team"], title="recplane usage --since 1h --by team,kind")


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
    features, training and evaluating two models as recorded runs, registering and serving them, batch inference."""
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

    _step("7. Features: definitions, a point-in-time training set, materialization, an online lookup")
    _features(client, ratings)

    _step("8. Train and evaluate: scheduler jobs, recorded runs on the exact dataset version")
    runs = _train_as_jobs(client, _demo_specs(ratings))
    _show_usage(client)
    comparison = client.compare_runs([run.id for run in runs])
    print_records(
        [{"metric": row.name, **{run.name: value for run, value in zip(runs, row.values, strict=True)}}
         for row in comparison.rows if _headline_metric(row.name)],
        ["metric", *(run.name for run in runs)],
        title="recplane runs compare",
    )

    _step("9. Registry: model versions with lineage, promoted to production")
    register_and_promote(client, *runs)

    _step("10. Online serving: retrieval → ranking on online features → rules, as a real service")
    deployment = serve_and_query(client, settings.home)

    _step("11. Batch inference: top-10 for every user into a versioned dataset")
    batch_predict(client, deployment)

    home = settings.home
    console.print(Panel.fit(
        f"Done in {time.perf_counter() - started:.1f}s.\nTry: recplane --home {home} datasets list\n"
        f"     recplane --home {home} runs list\n"
        f"     recplane --home {home} models history {RETRIEVAL_MODEL}\n"
        f"     recplane --home {home} serve {deployment} --dev   (then:)\n"
        f"     curl -s localhost:8100/v1/recommend -d '{{\"user_id\": 1, \"k\": 5}}'\n"
        f"     recplane --home {home} server --dev   (the control plane: http://127.0.0.1:8000/docs)",
        title="next", border_style="green"))
