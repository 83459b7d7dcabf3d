"""`recplane models ...` on a really trained run: register, alias, promote, history, show, compare — tables and JSON."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.fixtures.runs import tiny_interactions
from typer.testing import CliRunner

from recplane import Client
from recplane.cli import app
from recplane.config import Settings
from recplane.errors import InvalidInput, NotFound
from recplane.runtime import Runtime
from recplane.training.export import load_exported

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture
def trained(tmp_path: Path) -> tuple[Path, str]:
    """A home with a ratings dataset and one finished MF run whose model the training service exported."""
    home = tmp_path / "home"
    rows = tiny_interactions().to_pylist()
    for row in rows:
        row["ts"] = datetime.fromtimestamp(int(row["ts"]), UTC)
    with Client(settings=Settings(home=home)) as client:
        client.create_dataset(
            {
                "name": "ratings",
                "event_time": "ts",
                "columns": {"user_id": "int64", "item_id": "int64", "ts": "timestamp"},
            }
        )
        client.ingest("ratings", rows)
        settings = {"model": "mf", "epochs": 2, "batch_size": 32, "lr": 0.05, "params": {"dim": 8}, "patience": None}
        run = client.train({"dataset": "ratings", "train": settings}).run
    return home, run.id


def _cli(home: Path, *args: str) -> tuple[int, str, BaseException | None]:
    result = CliRunner().invoke(app, ["--home", str(home), *args])
    return result.exit_code, result.output, result.exception


def _json(home: Path, *args: str) -> Any:
    code, out, error = _cli(home, *args, "--json")
    assert code == 0, (out, error)
    return json.loads(out)


def test_register_alias_promote_and_read_the_history(trained: tuple[Path, str]) -> None:
    home, run_id = trained
    first = _json(home, "models", "register", "mf-ratings", "--run", run_id, "--description", "baseline")
    assert (first["version"], first["run_id"], first["kind"]) == (1, run_id, "retrieval")
    assert first["lineage"]["dataset"] == "ratings" and first["metrics"]["valid_metric"]
    model_dir = str(home.resolve() / "artifacts" / "runs" / run_id / "model")
    second = _json(home, "models", "register", "mf-ratings", "--artifact", model_dir, "--tag", "source=import")
    assert second["version"] == 2 and second["tags"] == {"source": "import"} and second["run_id"] is None

    event = _json(home, "models", "alias", "mf-ratings", "production", "1", "--reason", "first model")
    assert (event["from_version"], event["to_version"], event["actor"]) == (None, 1, "admin")
    _json(home, "models", "alias", "mf-ratings", "candidate", "2")
    before_promotion = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "")
    promoted = _json(home, "models", "alias", "mf-ratings", "production", "candidate", "--reason", "won the test")
    assert (promoted["from_version"], promoted["to_version"]) == (1, 2)

    history = _json(home, "models", "history", "mf-ratings")
    assert [(e["alias"], e["from_version"], e["to_version"]) for e in history] == [
        ("production", 1, 2),
        ("candidate", None, 2),
        ("production", None, 1),
    ]
    assert [e["reason"] for e in _json(home, "models", "history", "mf-ratings", "--alias", "production")] == [
        "won the test",
        "first model",
    ]
    at = _json(home, "models", "history", "mf-ratings", "--alias", "production", "--at", before_promotion)
    assert at["version"] == 1
    code, out, _ = _cli(home, "models", "history", "mf-ratings")
    assert code == 0 and "won the test" in out and "first model" in out

    shown = _json(home, "models", "show", "mf-ratings")
    assert shown["model"]["aliases"] == {"candidate": 2, "production": 2}
    assert [v["version"] for v in shown["versions"]] == [2, 1]
    assert _json(home, "models", "show", "mf-ratings@production")["version"] == 2
    assert _json(home, "models", "show", "mf-ratings:1")["description"] == "baseline"
    code, out, _ = _cli(home, "models", "show", "mf-ratings:1")
    assert code == 0 and "Lineage" in out and run_id in out
    assert [m["name"] for m in _json(home, "models", "list")] == ["mf-ratings"]
    code, out, _ = _cli(home, "models", "list")
    assert code == 0 and "production→2" in out


def test_compare_and_versions_that_outlive_their_run(trained: tuple[Path, str]) -> None:
    home, run_id = trained
    _json(home, "models", "register", "mf-ratings", "--run", run_id)
    _json(home, "models", "register", "mf-ratings", "--run", run_id)
    comparison = _json(home, "models", "compare", "mf-ratings", "1", "2")
    recall = next(row for row in comparison["metrics"] if row["name"].startswith("test.recall"))
    assert recall["delta"] == 0 and recall["better"] is None and comparison["params"] == []
    code, out, _ = _cli(home, "models", "compare", "mf-ratings", "1", "2")
    assert code == 0 and "delta" in out

    shutil.rmtree(home / "artifacts" / "runs" / run_id)
    with Runtime(Settings(home=home)) as runtime:
        version = runtime.registry.resolve("mf-ratings", 1)
        vectors = load_exported(runtime.registry.local_path(version)).query_vectors({"user_id": np.array([1, 2])})
        assert vectors.shape[0] == 2
        with pytest.raises(NotFound, match="no alias 'production'"):
            runtime.registry.resolve("mf-ratings", "production")
    code, _, error = _cli(home, "models", "show", "ghost")
    assert code != 0 and isinstance(error, NotFound)
    code, _, error = _cli(home, "models", "register", "mf-ratings", "--run", run_id)
    assert code != 0 and isinstance(error, InvalidInput) and "no manifest.json" in str(error)
