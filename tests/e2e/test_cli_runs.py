"""`recplane runs list/show/compare` on real recorded runs, as tables for people and as JSON for scripts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.fixtures.runs import record_tiny_run
from typer.testing import CliRunner

from recplane.catalog import Catalog
from recplane.cli import app
from recplane.config import Settings
from recplane.training.runs import NewRun, RunRecord, RunStore

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("one_torch_thread")]




@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def runs(home: Path) -> list[RunRecord]:
    """Two finished MF runs that differ in learning rate, then one failed LightGCN run (newest)."""
    settings = Settings(home=home)
    catalog = Catalog(settings.catalog_url)
    store = RunStore(catalog, settings.artifacts_root)
    recorded = [record_tiny_run(store, lr=0.001, name="slow"), record_tiny_run(store, lr=0.05, name="fast")]
    failed = store.create(NewRun(model="lightgcn", config={"model": "lightgcn"}, name="broken"))
    recorded.append(store.fail(failed.id, "RuntimeError: disk full"))
    catalog.close()
    return recorded


def _run(home: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["--home", str(home), *args])
    return result.exit_code, result.output


def test_runs_list_shows_every_run_newest_first_and_filters(home: Path, runs: list[RunRecord]) -> None:
    code, out = _run(home, "runs", "list", "--json")
    assert code == 0
    assert [run["id"] for run in json.loads(out)] == [runs[2].id, runs[1].id, runs[0].id]
    code, out = _run(home, "runs", "list", "--model", "mf", "--status", "finished", "--limit", "1", "--json")
    assert [run["name"] for run in json.loads(out)] == ["fast"]
    code, out = _run(home, "runs", "list")
    assert code == 0 and "Training runs" in out
    assert all(name in out for name in ("slow", "fast", "broken", "finished", "failed", "mrr@10"))
    code, out = _run(home, "runs", "list", "--status", "done")
    assert code != 0


def test_runs_show_prints_config_metrics_epochs_and_artifacts(home: Path, runs: list[RunRecord]) -> None:
    slow = runs[0]
    code, out = _run(home, "runs", "show", slow.id)
    assert code == 0, out
    for text in ("slow", "finished", "Config", "Metrics", "Epochs", "test.recall@10", "Artifacts", "ratings v3"):
        assert text in out, text
    code, out = _run(home, "runs", "show", slow.id, "--json")
    shown = json.loads(out)
    assert shown["config"]["lr"] == 0.001 and len(shown["epochs"]) == 2
    assert shown["metrics"]["test"] == slow.metrics.test
    code, out = _run(home, "runs", "show", runs[2].id)
    assert "RuntimeError: disk full" in out


def test_runs_compare_puts_runs_side_by_side_with_the_differing_settings(home: Path, runs: list[RunRecord]) -> None:
    slow, fast = runs[0], runs[1]
    code, out = _run(home, "runs", "compare", slow.id, fast.id, "--json")
    assert code == 0, out
    comparison = json.loads(out)
    rows = {row["name"]: row for row in comparison["rows"]}
    assert rows["lr"]["values"] == [0.001, 0.05] and "epochs" not in rows
    assert rows["final_loss"]["best"] in (0, 1) and rows["final_loss"]["higher_is_better"] is False
    code, out = _run(home, "runs", "compare", slow.id, fast.id)
    assert code == 0 and "Run comparison" in out and "lr" in out and "test.recall@10 ↑" in out


def test_unknown_runs_and_single_run_compares_are_one_line_errors(home: Path, runs: list[RunRecord]) -> None:
    from recplane.cli.app import main

    for args, expected in ((["runs", "show", "nope"], "not_found"), (["runs", "compare", runs[0].id], "invalid_input")):
        with pytest.raises(SystemExit) as done:
            import sys

            sys.argv = ["recplane", "--home", str(home), *args]
            main()
        assert done.value.code == 2, expected
