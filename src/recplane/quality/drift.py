"""Distribution drift between two samples: population stability index (PSI) and the two-sample KS test.

Pure functions over NumPy arrays or Arrow arrays; nulls (and NaN) are left out of both samples.

PSI compares the share of each sample in a set of bins, ``sum((q - p) * ln(q / p))`` with ``p`` the
reference share and ``q`` the current share. Numeric samples are cut at the reference's quantiles (so each
bin holds about the same share of the reference; repeated quantiles merge); string and bool samples use one
bin per category seen in either sample. Empty bins would make the logarithm infinite, so every share is
floored at ``epsilon`` (1e-4) first. Each term is ≥ 0, so PSI is ≥ 0, and identical samples give exactly 0.
Rules of thumb: < 0.1 no real change, 0.1-0.2 moderate, > 0.2 significant.

The KS statistic is the largest distance between the two empirical CDFs; its p-value uses the asymptotic
Kolmogorov distribution with Stephens' small-sample correction, ``Q((√n_e + 0.12 + 0.11/√n_e) · D)`` with
``n_e = n·m/(n+m)`` (the formula of Numerical Recipes' ``kstwo`` and SciPy's former ``ks_2samp``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from recplane.errors import InvalidInput

__all__ = [
    "DEFAULT_EPSILON",
    "PsiBins",
    "categorical_psi",
    "kolmogorov_sf",
    "ks_statistic",
    "psi",
    "psi_bins",
    "psi_from_counts",
    "quantile_cut_points",
]

DEFAULT_EPSILON = 1e-4
ArrayLike: TypeAlias = npt.NDArray[Any] | pa.Array | pa.ChunkedArray
FloatArray: TypeAlias = npt.NDArray[np.float64]


@dataclass(frozen=True)
class PsiBins:
    """The bins behind a PSI value: each bin's label, its two shares (before flooring) and its PSI term."""

    labels: list[str]
    reference_share: FloatArray
    current_share: FloatArray
    contribution: FloatArray

    @property
    def value(self) -> float:
        """The PSI: the sum of the per-bin terms."""
        return float(self.contribution.sum())


def psi(
    reference: ArrayLike, current: ArrayLike, bins: int = 10, *, epsilon: float = DEFAULT_EPSILON
) -> float:
    """Population stability index of ``current`` against ``reference`` (quantile bins, or categories)."""
    return psi_bins(reference, current, bins, epsilon=epsilon).value


def categorical_psi(reference: ArrayLike, current: ArrayLike, *, epsilon: float = DEFAULT_EPSILON) -> float:
    """PSI over categories: one bin per distinct value seen in either sample."""
    return _categorical_bins(_category_counts(reference), _category_counts(current), epsilon).value


def psi_bins(
    reference: ArrayLike, current: ArrayLike, bins: int = 10, *, epsilon: float = DEFAULT_EPSILON
) -> PsiBins:
    """The per-bin breakdown of :func:`psi`."""
    if _is_categorical(reference) or _is_categorical(current):
        if not (_is_categorical(reference) and _is_categorical(current)):
            raise InvalidInput("PSI needs both samples to be numeric or both categorical (string/bool).")
        return _categorical_bins(_category_counts(reference), _category_counts(current), epsilon)
    ref, cur = _numeric(reference, "reference"), _numeric(current, "current")
    cuts = quantile_cut_points(ref, bins)
    ref_share, cur_share, terms = _shares(_bin_counts(ref, cuts), _bin_counts(cur, cuts), epsilon)
    return PsiBins(_interval_labels(cuts), ref_share, cur_share, terms)


def psi_from_counts(
    reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike, *, epsilon: float = DEFAULT_EPSILON
) -> float:
    """PSI from per-bin counts of the two samples (same bins, same order)."""
    return float(_shares(reference_counts, current_counts, epsilon)[2].sum())


def quantile_cut_points(reference: npt.ArrayLike, bins: int) -> FloatArray:
    """Interior cut points at the reference's quantiles; bins are ``(-inf, c0], (c0, c1], ..., (c_k, inf)``.

    A reference with a single distinct value ``v`` gets the bins ``< v``, ``= v`` and ``> v``, so a shift in
    either direction still shows.
    """
    if bins < 2:
        raise InvalidInput(f"Numeric PSI needs at least 2 bins, not bins={bins}.")
    values = np.asarray(reference, dtype=np.float64)
    if values.size == 0:
        raise InvalidInput("Cannot cut bins from an empty reference sample.")
    if np.all(values == values[0]):
        only = float(values[0])
        return np.array([np.nextafter(only, -np.inf), only])
    return np.unique(np.quantile(values, np.linspace(0.0, 1.0, bins + 1)[1:-1])).astype(np.float64)


def ks_statistic(a: ArrayLike, b: ArrayLike) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic D (0..1) and its asymptotic two-sided p-value."""
    first = np.sort(_numeric(a, "first"))
    second = np.sort(_numeric(b, "second"))
    points = np.concatenate([first, second])
    cdf_first = np.searchsorted(first, points, side="right") / first.size
    cdf_second = np.searchsorted(second, points, side="right") / second.size
    statistic = float(np.max(np.abs(cdf_first - cdf_second)))
    effective = math.sqrt(first.size * second.size / (first.size + second.size))
    p_value = kolmogorov_sf((effective + 0.12 + 0.11 / effective) * statistic)
    return statistic, p_value


def kolmogorov_sf(x: float) -> float:
    """P(K > x) for the Kolmogorov distribution (the limit law of √n · D)."""
    if x <= 0:
        return 1.0
    if x < 1.18:
        # The alternating series converges slowly for small x; use the Jacobi-theta form of the CDF instead.
        j = np.arange(1, 9, dtype=np.float64)
        cdf = (
            math.sqrt(2 * math.pi) / x * float(np.sum(np.exp(-((2 * j - 1) ** 2) * math.pi**2 / (8 * x * x))))
        )
        return min(1.0, max(0.0, 1.0 - cdf))
    j = np.arange(1, 21, dtype=np.float64)
    sf = 2.0 * float(np.sum((-1.0) ** (j - 1) * np.exp(-2.0 * j * j * x * x)))
    return min(1.0, max(0.0, sf))


def _shares(
    reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike, epsilon: float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    if ref.shape != cur.shape:
        raise InvalidInput(
            f"Bin counts differ in length: {ref.size} reference bins, {cur.size} current bins."
        )
    if ref.sum() <= 0 or cur.sum() <= 0:
        raise InvalidInput("PSI needs at least one value in each sample.")
    ref_share, cur_share = ref / ref.sum(), cur / cur.sum()
    ref_floored, cur_floored = np.maximum(ref_share, epsilon), np.maximum(cur_share, epsilon)
    return ref_share, cur_share, (cur_floored - ref_floored) * np.log(cur_floored / ref_floored)


def _bin_counts(values: FloatArray, cuts: FloatArray) -> npt.NDArray[np.int64]:
    return np.bincount(np.searchsorted(cuts, values, side="left"), minlength=cuts.size + 1)


def _interval_labels(cuts: FloatArray) -> list[str]:
    edges = ["-inf", *(f"{c:.6g}" for c in cuts), "inf"]
    return [f"({low}, {high}]" if high != "inf" else f"({low}, inf)" for low, high in pairwise(edges)]


def _categorical_bins(reference: dict[Any, int], current: dict[Any, int], epsilon: float) -> PsiBins:
    categories = sorted(set(reference) | set(current), key=lambda value: (str(type(value)), value))
    ref_counts = [reference.get(category, 0) for category in categories]
    cur_counts = [current.get(category, 0) for category in categories]
    ref_share, cur_share, terms = _shares(ref_counts, cur_counts, epsilon)
    return PsiBins([str(category) for category in categories], ref_share, cur_share, terms)


def _is_categorical(values: ArrayLike) -> bool:
    if isinstance(values, pa.Array | pa.ChunkedArray):
        data_type = values.type
        if pa.types.is_dictionary(data_type):
            data_type = data_type.value_type
        return bool(
            pa.types.is_string(data_type)
            or pa.types.is_large_string(data_type)
            or pa.types.is_string_view(data_type)
            or pa.types.is_boolean(data_type)
        )
    return np.asarray(values).dtype.kind in "bUSO"


def _category_counts(values: ArrayLike) -> dict[Any, int]:
    if isinstance(values, pa.Array | pa.ChunkedArray):
        counts = pc.value_counts(pc.drop_null(values))
        keys = counts.field("values").to_pylist()
        return dict(zip(keys, counts.field("counts").to_pylist(), strict=True))
    array: npt.NDArray[Any] = np.asarray(values)
    if array.dtype.kind == "O":
        array = np.array([value for value in array if value is not None])
    keys_np, counts_np = np.unique(array, return_counts=True)
    return {
        key.item() if hasattr(key, "item") else key: int(count)
        for key, count in zip(keys_np, counts_np, strict=True)
    }


def _numeric(values: ArrayLike, which: str) -> FloatArray:
    """A float64 NumPy array without nulls or NaN (timestamps and dates become their integer ticks)."""
    if isinstance(values, pa.Array | pa.ChunkedArray):
        array = pc.drop_null(values)
        if (
            pa.types.is_timestamp(array.type)
            or pa.types.is_date(array.type)
            or pa.types.is_duration(array.type)
        ):
            array = array.cast(pa.int64()) if not pa.types.is_date32(array.type) else array.cast(pa.int32())
        if not (pa.types.is_integer(array.type) or pa.types.is_floating(array.type)):
            raise InvalidInput(
                f"The {which} sample has type {array.type}; expected numbers, dates or timestamps."
            )
        result = np.asarray(array.to_numpy(zero_copy_only=False), dtype=np.float64)
    else:
        raw: npt.NDArray[Any] = np.asarray(values)
        if raw.dtype.kind in "mM":
            raw = raw.astype(np.int64)
        if raw.dtype.kind not in "iuf":
            raise InvalidInput(
                f"The {which} sample has dtype {raw.dtype}; expected numbers, dates or timestamps."
            )
        result = raw.astype(np.float64)
    result = result[~np.isnan(result)]
    if result.size == 0:
        raise InvalidInput(f"The {which} sample has no non-null values.")
    return result
