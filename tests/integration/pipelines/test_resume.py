"""The control plane killed mid-run (SIGKILL) and restarted: the run finishes and no finished step runs again."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.fixtures.server import ServerProcess

from recplane import Client

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

STEPS = "tests.fixtures.pipelines.steps"
FAST = {"RECPLANE_SCHEDULER_INTERVAL_SECONDS": "0.2", "RECPLANE_PIPELINES_INTERVAL_SECONDS": "0.2",
        "RECPLANE_SCHEDULER_CAPACITY_CPU": "4", "RECPLANE_SCHEDULER_CAPACITY_MEMORY_GB": "16"}


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _chain(log: Path, *, inline: bool) -> list[dict[str, object]]:
    steps = []
    for index in range(4):
        arguments: dict[str, object] = {"log": str(log), "name": f"s{index}", "seconds": 1.5}
        if index:
            arguments["after"] = f"${{steps.s{index - 1}}}"
        steps.append({"name": f"s{index}", "uses": f"{STEPS}:slow", "inline": inline, "with": arguments})
    return steps


@pytest.mark.parametrize("inline", [False, True], ids=["process-steps", "inline-segment"])
def test_a_killed_control_plane_resumes_the_run_without_redoing_finished_steps(
    server_factory: Callable[..., ServerProcess], tmp_path: Path, inline: bool
) -> None:
    """Process steps keep running without a control plane; an inline segment dies with it and its unfinished
    steps are handed over again. Either way every step's side effect happens exactly once."""
    log = tmp_path / "steps.log"
    home = tmp_path / "home"
    server = server_factory(home, dev=True, env=FAST)
    steps = _chain(log, inline=inline)
    with Client(url=server.url) as client:
        client.apply_pipeline({"name": "resumable", "steps": steps})
        run = client.run_pipeline("resumable")
        _wait_for(lambda: "done s1" in log.read_text() if log.exists() else False, 120, "step s1 to finish")
    server.kill9()  # mid-run: s0 and s1 finished, s2 is running (or about to be submitted)
    if inline:
        assert "done s2" not in log.read_text()  # the segment died with the process, in the middle of s2

    finished_before = log.read_text().splitlines()
    time.sleep(2.0)  # the running step's job goes on without a control plane
    restarted = server_factory(home, dev=True, env=FAST)
    with Client(url=restarted.url) as client:
        done = client.wait_pipeline_run(run.id, timeout=180)
        assert done.status == "succeeded", done.error
        assert [s.status for s in done.steps] == ["succeeded"] * 4
        assert done.step("s3").outputs == "s3"
    lines = log.read_text().splitlines()
    assert lines == ["done s0", "done s1", "done s2", "done s3"], lines  # each step ran exactly once
    assert finished_before[:2] == ["done s0", "done s1"]
