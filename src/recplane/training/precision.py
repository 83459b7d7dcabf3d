"""Where a run computes and in which precision: device choice, autocast and (for fp16) gradient scaling.

``device="auto"`` picks CUDA when torch sees a GPU, else the CPU. ``precision="bf16"`` runs forward and loss
under ``torch.autocast`` with bfloat16 (CPU or CUDA): weights, optimizer state and gradients stay float32.
``"fp16"`` is CUDA only and scales the loss with a ``GradScaler`` so that small gradients do not underflow.
``"auto"`` is bf16 on a GPU that supports it and fp32 on the CPU, where bf16 autocast measured slower for the
zoo's small embedding models (numbers in ``docs/training.md``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from recplane.errors import InvalidInput
from recplane.models.base import Batch

__all__ = ["DeviceName", "ExecutionPlan", "Precision", "PrecisionName", "resolve_execution"]

DeviceName = Literal["cpu", "cuda", "auto"]
PrecisionName = Literal["fp32", "bf16", "fp16", "auto"]
Precision = Literal["fp32", "bf16", "fp16"]


@dataclass
class ExecutionPlan:
    """The resolved device and precision of a run, with the autocast context and the loss scaler they need."""

    device: torch.device
    precision: Precision
    scaler: torch.amp.GradScaler | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.precision == "fp16":
            self.scaler = torch.amp.GradScaler(self.device.type)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Forward passes (training and evaluation) run inside this."""
        if self.precision == "fp32":
            yield
            return
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        with torch.autocast(self.device.type, dtype=dtype):
            yield

    def to_device(self, batch: Batch) -> Batch:
        """The batch's tensors on the run's device (no copy on the CPU)."""
        if self.device.type == "cpu":
            return batch
        return {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}

    def backward_and_step(
        self,
        loss: Tensor,
        optimizer: torch.optim.Optimizer,
        clip: float | None,
        sync_gradients: Callable[[list[Tensor]], None] | None = None,
    ) -> None:
        """Backward pass, gradient sync between data-parallel workers, optional clipping and the optimizer step
        (through the scaler for fp16)."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if self.scaler is None:
            loss.backward()
            if sync_gradients is not None:
                sync_gradients(params)
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, clip)
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        if sync_gradients is not None:
            sync_gradients(params)  # every worker scales by the same factor, so scaled gradients add up
        if clip is not None:
            self.scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(params, clip)
        self.scaler.step(optimizer)
        self.scaler.update()


def resolve_execution(device: DeviceName, precision: PrecisionName) -> ExecutionPlan:
    """The plan for the requested device and precision; raise when the machine cannot run it."""
    if device not in ("cpu", "cuda", "auto"):
        raise InvalidInput(f"Unknown device {device!r}; choose 'cpu', 'cuda' or 'auto'.")
    if precision not in ("fp32", "bf16", "fp16", "auto"):
        raise InvalidInput(f"Unknown precision {precision!r}; choose 'fp32', 'bf16', 'fp16' or 'auto'.")
    cuda = torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise InvalidInput("device='cuda' was asked for but torch sees no GPU; use device='cpu' or 'auto'.")
    chosen = torch.device("cuda" if device == "cuda" or (device == "auto" and cuda) else "cpu")
    if precision == "auto":
        on_bf16_gpu = chosen.type == "cuda" and torch.cuda.is_bf16_supported()
        return ExecutionPlan(chosen, "bf16" if on_bf16_gpu else "fp32")
    if precision == "fp16" and chosen.type != "cuda":
        raise InvalidInput("precision='fp16' needs a GPU; on the CPU use 'bf16' or 'fp32'.")
    return ExecutionPlan(chosen, precision)
