"""`recplane pipelines ...` from the command line: apply YAML, run with --set and --wait, list, show the DAG,
backfill, and clear errors — tables and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recplane.cli import app

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

PIPELINE = """
name: cli-demo
params: {value: 2, date: "2026-01-01"}
steps:
  - name: first
    uses: noop
    inline: true
    with: {value: "${params.value}"}
  - name: second
    uses: noop
    inline: true
    with: {value: {"got": "${steps.first}", "day": "${params.date}"}}
"""


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[CliRunner, list[str]]:
    monkeypatch.setenv("RECPLANE_SCHEDULER_INTERVAL_SECONDS", "0.1")
    monkeypatch.setenv("RECPLANE_PIPELINES_INTERVAL_SECONDS", "0.1")
    return CliRunner(), ["--home", str(tmp_path / "home")]


def test_apply_run_list_show_and_backfill_from_the_cli(cli: tuple[CliRunner, list[str]], tmp_path: Path) -> None:
    runner, home = cli
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(PIPELINE)
    applied = runner.invoke(app, [*home, "pipelines", "apply", str(spec)])
    assert applied.exit_code == 0, applied.output
    assert "cli-demo" in applied.output and "first → second" in applied.output

    ran = runner.invoke(app, [*home, "pipelines", "run", "cli-demo", "--set", "value=5", "--wait", "--json"])
    assert ran.exit_code == 0, ran.output
    run = json.loads(ran.output)
    assert run["status"] == "succeeded" and run["params"]["value"] == 5
    second = next(s for s in run["steps"] if s["step"] == "second")
    assert second["outputs"] == {"got": 5, "day": "2026-01-01"} and second["needs"] == ["first"]

    shown = runner.invoke(app, [*home, "pipelines", "show", run["id"]])
    assert shown.exit_code == 0, shown.output
    assert "first" in shown.output and "second" in shown.output and "succeeded" in shown.output

    listed = runner.invoke(app, [*home, "pipelines", "list", "--json"])
    assert [r["id"] for r in json.loads(listed.output)] == [run["id"]]
    pipelines = runner.invoke(app, [*home, "pipelines", "list", "--pipelines", "--json"])
    assert json.loads(pipelines.output)[0]["edges"] == [["first", "second"]]

    backfill = runner.invoke(app, [*home, "pipelines", "backfill", "cli-demo", "--from", "2026-11-01", "--to",
                                   "2026-11-02", "--json"])
    assert backfill.exit_code == 0, backfill.output
    assert [r["params"]["date"] for r in json.loads(backfill.output)] == ["2026-11-01", "2026-11-02"]


def test_cli_errors_are_one_clear_line(cli: tuple[CliRunner, list[str]], tmp_path: Path) -> None:
    runner, home = cli
    spec = tmp_path / "cycle.yaml"
    spec.write_text("name: loop\nsteps:\n  - {name: a, uses: noop, with: {value: '${steps.b}'}}\n"
                    "  - {name: b, uses: noop, with: {value: '${steps.a}'}}\n")
    cycle = runner.invoke(app, [*home, "pipelines", "apply", str(spec)])
    assert cycle.exit_code != 0 and "cycle" in str(cycle.exception)
    missing = runner.invoke(app, [*home, "pipelines", "run", "nope"])
    assert missing.exit_code != 0
