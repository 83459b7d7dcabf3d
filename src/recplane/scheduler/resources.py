"""Amounts of compute — CPUs, memory in GB, GPUs — and the arithmetic quotas and capacities need."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RESOURCES", "ZERO", "Resources"]

RESOURCES = ("cpu", "memory_gb", "gpu")
_EPSILON = 1e-9  # resources are floats (0.5 CPU, 1.5 GB): compare with a little slack


@dataclass(frozen=True, slots=True)
class Resources:
    """An amount of compute: CPUs, memory in GB, GPUs."""

    cpu: float = 0.0
    memory_gb: float = 0.0
    gpu: float = 0.0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu + other.cpu, self.memory_gb + other.memory_gb, self.gpu + other.gpu)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu - other.cpu, self.memory_gb - other.memory_gb, self.gpu - other.gpu)

    def times(self, factor: float) -> Resources:
        """This amount ``factor`` times (a gang of ``factor`` workers)."""
        return Resources(self.cpu * factor, self.memory_gb * factor, self.gpu * factor)

    def at_least_zero(self) -> Resources:
        """Negative parts set to zero."""
        return Resources(max(self.cpu, 0.0), max(self.memory_gb, 0.0), max(self.gpu, 0.0))

    def fits_within(self, limit: Resources) -> bool:
        """True when no resource is above ``limit``."""
        return (  # spelled out: the planner asks this tens of thousands of times a round
            self.cpu <= limit.cpu + _EPSILON
            and self.memory_gb <= limit.memory_gb + _EPSILON
            and self.gpu <= limit.gpu + _EPSILON
        )

    def first_over(self, limit: Resources) -> str | None:
        """The first resource (cpu, memory_gb, gpu) above ``limit``, or None."""
        if self.cpu > limit.cpu + _EPSILON:
            return "cpu"
        if self.memory_gb > limit.memory_gb + _EPSILON:
            return "memory_gb"
        if self.gpu > limit.gpu + _EPSILON:
            return "gpu"
        return None

    def is_zero(self) -> bool:
        """True when every resource is (about) zero."""
        return all(abs(getattr(self, name)) <= _EPSILON for name in RESOURCES)

    def dominant_share(self, total: Resources) -> float:
        """The largest ``self / total`` over the resources ``total`` has (DRF's dominant share)."""
        share = 0.0
        if total.cpu > _EPSILON:
            share = self.cpu / total.cpu
        if total.memory_gb > _EPSILON:
            share = max(share, self.memory_gb / total.memory_gb)
        if total.gpu > _EPSILON:
            share = max(share, self.gpu / total.gpu)
        return share

    def to_dict(self) -> dict[str, float]:
        """``{"cpu", "memory_gb", "gpu"}``."""
        return {"cpu": self.cpu, "memory_gb": self.memory_gb, "gpu": self.gpu}


ZERO = Resources()
