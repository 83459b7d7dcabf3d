"""Trainer hooks and execution: callbacks in order, exceptions that stop a run, bf16, device choice, progress."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from rich.console import Console

from recplane.errors import InvalidInput
from recplane.training import EpochRecord, RunInfo, TrainCallback, TrainConfig, TrainResult, train
from recplane.training.precision import resolve_execution
from recplane.training.progress import RichProgress


def interactions() -> pa.Table:
    """Users of cluster c (user % 4) interact with items of cluster c (item % 4) and like items 0..9."""
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(40), 8)
    items = rng.integers(0, 5, len(users)) * 4 + users % 4
    rating = np.where(items < 10, 5.0, 1.0)
    return pa.table({"user_id": users, "item_id": items, "ts": np.arange(len(users)), "rating": rating})


class Recorder(TrainCallback):
    """Writes down every hook call, in order."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.info: RunInfo | None = None
        self.records: list[EpochRecord] = []
        self.checkpoints: list[str] = []
        self.result: TrainResult | None = None

    def on_train_start(self, info: RunInfo) -> None:
        self.events.append("start")
        self.info = info

    def on_step(self, step: int, loss: float) -> None:
        self.events.append(f"step {step}")

    def on_epoch_end(self, record: EpochRecord) -> None:
        self.events.append(f"epoch {record.epoch}")
        self.records.append(record)

    def on_checkpoint(self, path: str) -> None:
        self.events.append("checkpoint")
        self.checkpoints.append(path)

    def on_train_end(self, result: TrainResult) -> None:
        self.events.append("end")
        self.result = result


def mf_config(**overrides: object) -> TrainConfig:
    values: dict[str, object] = {"model": "mf", "params": {"dim": 8}, "epochs": 2, "batch_size": 64, "patience": None}
    values.update(overrides)
    return TrainConfig(**values)  # type: ignore[arg-type]


def test_callbacks_hear_start_each_step_each_epoch_each_checkpoint_and_end_in_order(tmp_path: Path) -> None:
    recorder = Recorder()
    result = train(interactions(), mf_config(checkpoint_dir=str(tmp_path)), callbacks=[recorder])
    steps = len(result.step_losses)
    per_epoch = steps // 2
    expected = [
        "start",
        *[f"step {s}" for s in range(1, per_epoch + 1)],
        "checkpoint",
        "epoch 0",
        *[f"step {s}" for s in range(per_epoch + 1, steps + 1)],
        "checkpoint",
        "epoch 1",
        "end",
    ]
    assert recorder.events == expected
    assert recorder.info is not None
    assert recorder.info.batches_per_epoch == per_epoch and recorder.info.epochs == 2
    assert recorder.info.num_parameters == result.num_parameters > 0
    assert (recorder.info.valid_metric, recorder.info.valid_metric_bigger) == ("mrr@10", True)
    assert recorder.info.config["model"] == "mf" and (recorder.info.start_epoch, recorder.info.start_batch) == (0, 0)
    assert recorder.records == result.epochs
    assert recorder.checkpoints == [str(tmp_path / "epoch-0001.pt"), str(tmp_path / "epoch-0002.pt")]
    assert recorder.result is result


class StopAfterFirstEpoch(TrainCallback):
    def on_epoch_end(self, record: EpochRecord) -> None:
        raise RuntimeError(f"pruned at epoch {record.epoch}")


def test_an_exception_from_a_callback_ends_the_run() -> None:
    recorder = Recorder()
    with pytest.raises(RuntimeError, match="pruned at epoch 0"):
        train(interactions(), mf_config(epochs=5), callbacks=[recorder, StopAfterFirstEpoch()])
    assert recorder.events.count("epoch 0") == 1
    assert "epoch 1" not in recorder.events and "end" not in recorder.events


@pytest.mark.parametrize("model", ["mf", "deepfm"])
def test_bf16_autocast_trains_on_the_cpu(model: str) -> None:
    params = {"dim": 8} if model == "mf" else {"mlp_hidden_size": (16,)}
    config = mf_config(model=model, params=params, epochs=3, lr=0.01, precision="bf16", device="cpu")
    result = train(interactions(), config)
    assert result.precision == "bf16" and result.device == "cpu"
    assert np.isfinite(result.step_losses).all()
    assert result.epochs[-1].loss < result.epochs[0].loss
    # Weights stay float32 under autocast.
    assert all(p.dtype == torch.float32 for p in result.model.parameters())


def test_device_and_precision_resolution() -> None:
    plan = resolve_execution("cpu", "auto")
    assert (plan.device.type, plan.precision, plan.scaler) == ("cpu", "fp32", None)
    with pytest.raises(InvalidInput, match="fp16' needs a GPU"):
        resolve_execution("cpu", "fp16")
    with pytest.raises(InvalidInput, match="Unknown precision"):
        resolve_execution("cpu", "fp8")  # type: ignore[arg-type]
    if not torch.cuda.is_available():
        assert resolve_execution("auto", "auto").device.type == "cpu"
        with pytest.raises(InvalidInput, match="sees no GPU"):
            resolve_execution("cuda", "fp32")


def test_rich_progress_prints_a_line_per_epoch_without_a_terminal() -> None:
    output = io.StringIO()
    console = Console(file=output, force_terminal=False, width=120)
    train(interactions(), mf_config(), callbacks=[RichProgress(console)])
    text = output.getvalue()
    assert "Training mf:" in text
    assert "epoch 1: loss" in text and "epoch 2: loss" in text and "mrr@10" in text
    assert "test, best mrr@10 at epoch" in text


def test_rich_progress_redraws_at_most_at_its_rate_on_a_terminal() -> None:
    output = io.StringIO()
    console = Console(file=output, force_terminal=True, width=120)
    progress = RichProgress(console, refreshes_per_second=1e-6)  # only the forced end-of-epoch redraws
    result = train(interactions(), mf_config(), callbacks=[progress])
    assert len(result.step_losses) > 4
    assert "samples/s" in output.getvalue()
