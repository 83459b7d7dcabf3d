"""`recplane queues`, `recplane jobs` and `recplane usage` like a user types them, against real job processes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from recplane.cli import app

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

QUEUES = {"queues": [
    {"name": "recsys", "team": "recsys", "cohort": "lab", "nominal": {"cpu": 2, "memory_gb": 4}},
    {"name": "ads", "team": "ads", "cohort": "lab", "nominal": {"cpu": 2, "memory_gb": 4},
     "borrowing_limit": {"cpu": 1}},
]}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RECPLANE_SCHEDULER_CAPACITY_CPU", "4")
    monkeypatch.setenv("RECPLANE_SCHEDULER_CAPACITY_MEMORY_GB", "8")
    monkeypatch.setenv("RECPLANE_SCHEDULER_INTERVAL_SECONDS", "0.1")
    return tmp_path / "home"


def _run(home: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["--home", str(home), *args], env={"COLUMNS": "200"})  # a wide terminal
    return result.exit_code, result.output


def _write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_queues_apply_and_list(home: Path, tmp_path: Path) -> None:
    code, out = _run(home, "queues", "apply", str(_write(tmp_path / "queues.yaml", QUEUES)))
    assert code == 0, out
    assert "Applied queues" in out and "recsys" in out and "ads" in out
    code, out = _run(home, "queues", "list", "--json")
    listed = {queue["name"]: queue for queue in json.loads(out)}
    assert listed["ads"]["borrowing_limit"] == {"cpu": 1.0, "memory_gb": None, "gpu": None}
    assert listed["recsys"]["cohort"] == "lab" and listed["recsys"]["running"] == 0


def test_a_job_from_submit_to_usage(home: Path, tmp_path: Path) -> None:
    _run(home, "queues", "apply", str(_write(tmp_path / "queues.yaml", QUEUES)))
    spec = _write(tmp_path / "job.yaml", {
        "name": "greeter", "team": "recsys", "queue": "recsys", "priority": 3,
        "command": [sys.executable, "-c", "print('hello from a job')"],
    })
    code, out = _run(home, "jobs", "submit", str(spec), "--wait", "--json")
    assert code == 0, out
    job = json.loads(out)
    assert job["status"] == "succeeded" and job["name"] == "greeter"

    code, out = _run(home, "jobs", "list", "--team", "recsys")
    assert code == 0 and "greeter" in out and "succeeded" in out
    code, out = _run(home, "jobs", "show", job["id"])
    assert code == 0 and "History" in out and "exited with code 0" in out
    code, out = _run(home, "jobs", "logs", job["id"])
    assert code == 0 and "hello from a job" in out
    code, out = _run(home, "jobs", "explain", job["id"])
    assert code == 0 and "Succeeded: exited with code 0." in out

    code, out = _run(home, "usage", "--team", "recsys", "--since", "1d", "--by", "team,queue", "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["rows"][0]["group"] == {"team": "recsys", "queue": "recsys"} and report["rows"][0]["jobs"] == 1
    code, out = _run(home, "usage", "--since", "7d")
    assert code == 0 and "recsys" in out and "prices per hour" in out


def test_explain_cancel_and_retry_of_a_waiting_job(home: Path, tmp_path: Path) -> None:
    _run(home, "queues", "apply", str(_write(tmp_path / "queues.yaml", QUEUES)))
    spec = _write(tmp_path / "big.yaml", {"team": "ads", "queue": "ads", "resources": {"cpu": 3.5},
                                         "command": [sys.executable, "-c", "print(1)"]})
    code, out = _run(home, "jobs", "submit", str(spec), "--json")
    job_id = json.loads(out)["id"]
    code, out = _run(home, "jobs", "explain", job_id)
    assert code == 0
    assert "can never use more than 3 CPU (nominal quota + borrowing limit, within its cohort's total)" in out
    code, out = _run(home, "jobs", "cancel", job_id, "--json")
    assert json.loads(out)["status"] == "cancelled"
    code, out = _run(home, "jobs", "retry", job_id, "--json")
    assert json.loads(out)["status"] == "queued"
    code, out = _run(home, "jobs", "worker", "--once")
    assert code == 0 and "admitted 0" in out and "waiting 1" in out


def test_errors_are_one_clear_line(home: Path, tmp_path: Path) -> None:
    spec = _write(tmp_path / "bad.yaml", {"queue": "nowhere", "command": ["true"]})
    result = CliRunner().invoke(app, ["--home", str(home), "jobs", "submit", str(spec)])
    assert result.exit_code != 0
    assert "No queue 'nowhere'" in str(result.exception) or "No queue 'nowhere'" in result.output
