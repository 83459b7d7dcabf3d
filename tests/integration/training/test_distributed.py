"""Data-parallel training with real worker processes (gloo): same learning curve as one process, callbacks in the
caller, worker errors surfaced, pruning stops the workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tests.fixtures.runs import tiny_config, tiny_interactions

from recplane.errors import InvalidInput
from recplane.training import EpochRecord, TrainCallback, train
from recplane.training.callbacks import RunInfo, RunPruned

pytestmark = pytest.mark.integration


class Recorder(TrainCallback):
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.steps = 0

    def on_train_start(self, info: RunInfo) -> None:
        self.calls.append("start")

    def on_step(self, step: int, loss: float) -> None:
        self.steps += 1

    def on_epoch_end(self, record: EpochRecord) -> None:
        self.calls.append(f"epoch{record.epoch}")

    def on_checkpoint(self, path: str) -> None:
        self.calls.append("checkpoint")

    def on_train_end(self, result: object) -> None:
        self.calls.append("end")


@pytest.mark.parametrize("model", ["mf", "lightgcn"])
def test_two_workers_follow_the_single_process_loss_curve(model: str) -> None:
    """Same global batches and negatives, gradients weighted by each slice's share: the curves agree to float
    rounding, batch for batch, and the learned model scores the same."""
    table = tiny_interactions(num_users=60)
    params = {"dim": 8} if model == "mf" else {"dim": 8, "num_layers": 2}
    config = tiny_config(model=model, params=params, epochs=3, batch_size=50, device="cpu", precision="fp32")
    torch.set_num_threads(1)
    single = train(table, config)
    parallel = train(table, config, workers=2)
    assert parallel.workers == 2 and len(parallel.step_losses) == len(single.step_losses)
    assert parallel.step_losses == pytest.approx(single.step_losses, rel=1e-4, abs=1e-6)
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(parallel.model.state_dict()[name], value, rtol=1e-3, atol=1e-5)
    assert parallel.test_metrics == pytest.approx(single.test_metrics, abs=1e-6)


def test_callbacks_run_in_the_caller_and_checkpoints_come_from_rank_zero(tmp_path: Path) -> None:
    recorder = Recorder()
    config = tiny_config(epochs=2, checkpoint_dir=str(tmp_path), device="cpu")
    result = train(tiny_interactions(), config, workers=2, callbacks=[recorder])
    assert recorder.calls == ["start", "checkpoint", "epoch0", "checkpoint", "epoch1", "end"]
    assert recorder.steps == len(result.step_losses)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0001.pt", "epoch-0002.pt", "latest.pt"]


def test_a_callback_error_stops_the_workers_and_reaches_the_caller() -> None:
    class Prune(TrainCallback):
        def on_epoch_end(self, record: EpochRecord) -> None:
            raise RunPruned("not worth it")

    started = time.monotonic()
    with pytest.raises(RunPruned, match="not worth it"):
        train(tiny_interactions(), tiny_config(epochs=50, device="cpu"), workers=2, callbacks=[Prune()])
    assert time.monotonic() - started < 60


def test_a_worker_error_is_raised_as_the_original_recplane_error() -> None:
    with pytest.raises(InvalidInput, match="Invalid params for model 'mf'"):
        train(tiny_interactions(), tiny_config(params={"no_such_param": 1}, device="cpu"), workers=2)


def test_a_script_without_a_main_guard_fails_with_a_hint_instead_of_hanging(tmp_path: Path) -> None:
    script = tmp_path / "train_no_guard.py"
    script.write_text(
        "from tests.fixtures.runs import tiny_config, tiny_interactions\n"
        "from recplane.training import train\n"
        "train(tiny_interactions(), tiny_config(device='cpu'), workers=2)\n"
    )
    repo = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    assert done.returncode != 0
    assert "TrainingFailed" in done.stderr and '__name__ == "__main__"' in done.stderr
