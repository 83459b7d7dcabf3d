"""Training checkpoints: model, optimizer, RNG states and the position in the data order, for exact resume.

A checkpoint records where the run stands as ``(epoch, batch)`` — the next batch to train — plus the global torch
RNG (dropout), the negative-sampling generator and the trainer's bookkeeping (loss curve, per-epoch metrics,
early-stopping state and the best weights so far). The batch order itself is a pure function of
``(seed, epoch)`` (:class:`~recplane.training.data.BatchOrder`), so restoring these is enough for the resumed
run to see the same next batch and produce the same parameters as an uninterrupted one.

Files are written to a temporary name and renamed, so a crash mid-write never leaves a truncated checkpoint.
Everything saved is tensors and plain containers, so loading uses ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from recplane.errors import InvalidInput, NotFound

__all__ = ["TrainState", "load_checkpoint", "save_checkpoint"]

FORMAT_VERSION = 1


@dataclass
class TrainState:
    """The trainer's progress. ``epoch``/``batch`` name the next batch to train (``batch == 0``: epoch start)."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    step_losses: list[float] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    epoch_loss_sum: float = 0.0
    epoch_batches: int = 0
    best_value: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    stopped_early: bool = False
    best_model: dict[str, Tensor] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainState:
        return cls(**values)


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    generator: torch.Generator,
    config: dict[str, Any],
) -> Path:
    """Write a checkpoint atomically; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format_version": FORMAT_VERSION,
        "config": config,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "state": state.to_dict(),
        "torch_rng": torch.get_rng_state(),
        "generator": generator.get_state(),
    }
    temporary = path.with_name(path.name + ".tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)
    return path


def load_checkpoint(
    path: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    config: dict[str, Any] | None = None,
) -> TrainState:
    """Restore model, optimizer and RNG states from a checkpoint and return the trainer's progress.

    With ``config``, refuse a checkpoint written for a different model, data order or seed: resuming it would
    silently not continue the same run.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"No checkpoint at {path}; pass a file written by the trainer (checkpoint_dir).")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format_version") != FORMAT_VERSION:
        raise InvalidInput(f"Checkpoint {path} has format {payload.get('format_version')}; expected {FORMAT_VERSION}.")
    if config is not None:
        saved = payload["config"]
        differing = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
        if differing:
            raise InvalidInput(
                f"Checkpoint {path} was written by a run with different settings {differing}; resume with the "
                "same model, params, batch_size, optimizer, negatives and seed."
            )
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    torch.set_rng_state(payload["torch_rng"])
    generator.set_state(payload["generator"])
    return TrainState.from_dict(payload["state"])
