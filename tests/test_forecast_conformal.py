"""The conformal band: calibrated where the quantile models are not, on data it never saw."""

from __future__ import annotations

import numpy as np
import pytest

from cloud.forecasting import conformal


def _overconfident(rng: np.random.Generator, n: int, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Truths ~ N(0, scale) and a band that claims P10-P90 but spans only +-0.5 scale."""
    y = rng.normal(0.0, scale)
    pred = np.column_stack([-0.5 * scale, np.zeros(n), 0.5 * scale])
    return pred, y


def _coverage(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((y >= pred[:, 0]) & (y <= pred[:, 2])))


@pytest.mark.parametrize("claimed_half_width", [0.5, 3.0])  # too narrow, too wide
def test_a_calibrated_band_holds_80_percent_of_new_truths(claimed_half_width):
    rng = np.random.default_rng(5)
    n = 20_000
    scale = rng.uniform(0.2, 3.0, 2 * n)  # heteroscedastic: the band must scale with each row's width
    y = rng.normal(0.0, scale)
    pred = np.column_stack([-claimed_half_width * scale, np.zeros(2 * n), claimed_half_width * scale])
    band = conformal.band_offsets(pred[:n], y[:n], 0.1, 0.1)
    before, after = _coverage(pred[n:], y[n:]), _coverage(conformal.widen(pred[n:], band), y[n:])
    assert abs(before - 0.8) > 0.1  # the test has teeth: uncalibrated, the band is far off
    assert after == pytest.approx(0.8, abs=0.015)
    below = float(np.mean(y[n:] < conformal.widen(pred[n:], band)[:, 0]))
    assert below == pytest.approx(0.1, abs=0.01)


def test_widening_never_moves_the_median_nor_crosses_it():
    rng = np.random.default_rng(1)
    pred, y = _overconfident(rng, 1000, np.ones(1000))
    narrowed = conformal.widen(pred, conformal.Band(-2.0, -2.0))  # asked to shrink past the median
    np.testing.assert_array_equal(narrowed[:, 1], pred[:, 1])
    assert (narrowed[:, 0] <= narrowed[:, 1]).all() and (narrowed[:, 2] >= narrowed[:, 1]).all()


def test_rows_with_an_empty_band_stay_as_they_are_and_do_not_count():
    pred = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    band = conformal.band_offsets(pred, np.array([5.0, 2.0, 2.5]), 0.1, 0.1)
    assert np.isfinite(band.low) and np.isfinite(band.high)
    np.testing.assert_array_equal(conformal.widen(pred, band)[0], [0.0, 0.0, 0.0])


def test_the_conformal_quantile_is_the_finite_sample_rank():
    scores = np.arange(1.0, 11.0)  # 10 scores: level 0.9 needs rank ceil(11 * 0.9) = 10
    assert conformal.conformal_quantile(scores, 0.9) == 10.0
    assert conformal.conformal_quantile(scores, 0.5) == 6.0
