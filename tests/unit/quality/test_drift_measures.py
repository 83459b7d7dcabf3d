"""PSI and the two-sample KS test: hand-computed values and properties that must always hold."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recplane.errors import InvalidInput
from recplane.quality import ks_statistic, psi
from recplane.quality.drift import (
    DEFAULT_EPSILON,
    categorical_psi,
    kolmogorov_sf,
    psi_bins,
    psi_from_counts,
    quantile_cut_points,
)

EPS = DEFAULT_EPSILON
ONE_TO_TEN = np.arange(1, 11)
# Shares (0.5, 0.5) against (0.75, 0.25): 0.25·ln(1.5) + 0.25·ln(2).
HALVES_VS_THREE_QUARTERS = 0.25 * math.log(1.5) + 0.25 * math.log(2.0)


def kolmogorov_series(x: float, terms: int = 400) -> float:
    """Q(x) = 2 Σ (-1)^(j-1) exp(-2 j² x²), summed directly (an independent reference)."""
    return 2.0 * sum((-1) ** (j - 1) * math.exp(-2.0 * j * j * x * x) for j in range(1, terms + 1))


def test_reference_quantiles_cut_the_bins() -> None:
    assert quantile_cut_points(ONE_TO_TEN, 2).tolist() == [5.5]
    assert quantile_cut_points(ONE_TO_TEN, 4).tolist() == [3.25, 5.5, 7.75]


def test_psi_of_two_bins_matches_the_hand_computed_value() -> None:
    # Reference 1..10 is cut at 5.5: shares (0.5, 0.5). Current [1, 1, 1, 6]: shares (0.75, 0.25).
    assert psi(ONE_TO_TEN, np.array([1, 1, 1, 6]), bins=2) == pytest.approx(
        HALVES_VS_THREE_QUARTERS, abs=1e-12
    )
    assert psi_from_counts([50, 50], [75, 25]) == pytest.approx(HALVES_VS_THREE_QUARTERS, abs=1e-12)


def test_an_empty_bin_is_floored_at_epsilon() -> None:
    # Current [1, 2] puts nothing above 5.5: shares (1, 0) -> (1, 1e-4).
    expected = 0.5 * math.log(1 / 0.5) + (EPS - 0.5) * math.log(EPS / 0.5)
    assert psi(ONE_TO_TEN, np.array([1, 2]), bins=2) == pytest.approx(expected, abs=1e-12)


def test_values_equal_to_a_cut_point_fall_in_the_lower_bin() -> None:
    breakdown = psi_bins(ONE_TO_TEN, np.array([5.5, 5.5, 5.6, 5.6]), bins=2)
    assert breakdown.labels == ["(-inf, 5.5]", "(5.5, inf)"]
    assert breakdown.current_share.tolist() == [0.5, 0.5]
    assert breakdown.value == 0.0


def test_a_constant_reference_still_sees_a_shift_in_either_direction() -> None:
    # Bins are "< 3", "= 3", "> 3"; all of the current sample moves from "= 3" to "> 3" (or "< 3").
    expected = 2 * (1 - EPS) * math.log(1 / EPS)
    assert psi(np.full(50, 3.0), np.full(20, 4.0)) == pytest.approx(expected, abs=1e-9)
    assert psi(np.full(50, 3.0), np.full(20, 2.0)) == pytest.approx(expected, abs=1e-9)
    assert psi(np.full(50, 3.0), np.full(20, 3.0)) == 0.0


def test_categorical_psi_matches_the_hand_computed_value() -> None:
    reference = pa.array(["a", "a", "b", "b"])
    assert psi(reference, pa.array(["a", "a", "a", "b"])) == pytest.approx(
        HALVES_VS_THREE_QUARTERS, abs=1e-12
    )
    # A new category "c" (absent from the reference, floored at epsilon) takes half of the current sample.
    expected = 2 * 0.25 * math.log(2.0) + (0.5 - EPS) * math.log(0.5 / EPS)
    assert categorical_psi(np.array(["a", "b"]), np.array(["a", "b", "c", "c"])) == pytest.approx(expected)


def test_nulls_and_nan_are_left_out_of_both_samples() -> None:
    assert psi(pa.array([1.0, None, 2.0, 3.0]), np.array([1.0, np.nan, 2.0, 3.0])) == 0.0
    assert psi(pa.array(["a", None]), pa.array(["a"])) == 0.0
    assert ks_statistic(pa.array([1, 2, None]), np.array([1.0, 2.0, np.nan])) == (0.0, 1.0)


def test_timestamps_are_compared_by_time() -> None:
    early = pa.array([0, 60, 120], pa.timestamp("us", tz="UTC"))
    late = pa.array([10**12, 10**12 + 60], pa.timestamp("us", tz="UTC"))
    assert ks_statistic(early, late)[0] == 1.0


def test_psi_refuses_an_empty_sample_or_mixed_kinds() -> None:
    with pytest.raises(InvalidInput, match="no non-null values"):
        psi(np.array([1.0, 2.0]), pa.array([None], pa.float64()))
    with pytest.raises(InvalidInput, match="both samples to be numeric or both categorical"):
        psi(np.array([1.0, 2.0]), np.array(["a", "b"]))


def test_ks_statistic_matches_the_hand_computed_value() -> None:
    # ECDFs of [1,2,3,4] and [3,4,5,6] at 1..6: (.25,0) (.5,0) (.75,.25) (1,.5) (1,.75) (1,1): D = 0.5.
    statistic, p_value = ks_statistic(np.array([1, 2, 3, 4]), np.array([3, 4, 5, 6]))
    assert statistic == 0.5
    root = math.sqrt(4 * 4 / 8)
    assert p_value == pytest.approx(kolmogorov_series((root + 0.12 + 0.11 / root) * 0.5), abs=1e-12)


def test_ks_statistic_handles_ties_and_disjoint_samples() -> None:
    # At 1: F_a = 2/3, F_b = 1/3; at 2 both are 1.
    assert ks_statistic([1, 1, 2], [1, 2, 2])[0] == pytest.approx(1 / 3)
    statistic, p_value = ks_statistic(np.arange(100), np.arange(100) + 1000)
    assert statistic == 1.0 and p_value < 1e-20


def test_kolmogorov_tail_matches_published_critical_values() -> None:
    assert kolmogorov_sf(1.2238) == pytest.approx(0.10, abs=1e-4)
    assert kolmogorov_sf(1.3581) == pytest.approx(0.05, abs=1e-4)
    assert kolmogorov_sf(1.6276) == pytest.approx(0.01, abs=1e-4)
    assert kolmogorov_sf(0.8276) == pytest.approx(0.50, abs=1e-4)  # the median of the distribution
    assert kolmogorov_sf(0.0) == 1.0


@given(st.floats(min_value=0.3, max_value=4.0))
def test_kolmogorov_tail_agrees_with_the_direct_series(x: float) -> None:
    assert kolmogorov_sf(x) == pytest.approx(kolmogorov_series(x), abs=1e-10)


_FLOAT_SAMPLES = st.lists(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False), min_size=1, max_size=60
)
_WORD_SAMPLES = st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(_FLOAT_SAMPLES, _FLOAT_SAMPLES, st.integers(2, 20))
def test_psi_is_never_negative(reference: list[float], current: list[float], bins: int) -> None:
    assert psi(np.array(reference), np.array(current), bins=bins) >= 0.0


@settings(max_examples=200, deadline=None)
@given(_FLOAT_SAMPLES, st.integers(2, 20))
def test_psi_of_a_sample_with_itself_is_zero(sample: list[float], bins: int) -> None:
    assert psi(np.array(sample), np.array(sample), bins=bins) == 0.0


@settings(max_examples=200, deadline=None)
@given(_WORD_SAMPLES, _WORD_SAMPLES)
def test_categorical_psi_is_never_negative_and_zero_on_itself(
    reference: list[str], current: list[str]
) -> None:
    assert psi(pa.array(reference), pa.array(current)) >= 0.0
    assert psi(pa.array(reference), pa.array(reference)) == 0.0


@settings(max_examples=200, deadline=None)
@given(_FLOAT_SAMPLES, _FLOAT_SAMPLES)
def test_ks_is_a_symmetric_distance_in_unit_range(a: list[float], b: list[float]) -> None:
    statistic, p_value = ks_statistic(np.array(a), np.array(b))
    assert 0.0 <= statistic <= 1.0 and 0.0 <= p_value <= 1.0
    assert ks_statistic(np.array(b), np.array(a)) == (statistic, p_value)


@settings(max_examples=200, deadline=None)
@given(_FLOAT_SAMPLES)
def test_ks_of_a_sample_with_itself_is_zero_with_p_value_one(sample: list[float]) -> None:
    assert ks_statistic(np.array(sample), np.array(sample)) == (0.0, 1.0)
