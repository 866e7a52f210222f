"""The conformal band: calibrated where the quantile models are not, on data it never saw."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cloud.forecasting import conformal
from cloud.forecasting import design as dz
from cloud.forecasting.targets import LOAD_KW
from cloud.forecasting.training import fit_primary
from der_core import der_data as dd


def _overconfident(rng: np.random.Generator, n: int, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Truths ~ N(0, scale) and a band that claims P10-P90 but spans only +-0.5 scale."""
    y = rng.normal(0.0, scale)
    pred = np.column_stack([-0.5 * scale, np.zeros(n), 0.5 * scale])
    return pred, y


def _coverage(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((y >= pred[:, 0]) & (y <= pred[:, 2])))


@pytest.mark.parametrize("floored", [False, True])  # rows narrower than the typical band moved by its width
@pytest.mark.parametrize("claimed_half_width", [0.5, 3.0])  # too narrow, too wide
def test_a_calibrated_band_holds_80_percent_of_new_truths(claimed_half_width, floored):
    rng = np.random.default_rng(5)
    n = 20_000
    scale = rng.uniform(0.2, 3.0, 2 * n)  # heteroscedastic: the band must scale with each row's width
    y = rng.normal(0.0, scale)
    pred = np.column_stack([-claimed_half_width * scale, np.zeros(2 * n), claimed_half_width * scale])
    band = conformal.band_offsets(pred[:n], y[:n], 0.1, 0.1, conformal.typical_width(pred[:n]) if floored else 0.0)
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


def _holiday_slice(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A calibration slice like a home's holiday week and the day after it: the model drew
    its band almost shut (0.01 kW wide) around a constant load, and on a quarter of the rows
    the household was back, 0.05 to 0.3 kW above P90."""
    n = 4000
    pred = np.column_stack([np.full(n, 0.115), np.full(n, 0.12), np.full(n, 0.125)])
    y = np.full(n, 0.12)
    back = rng.random(n) < 0.25
    y[back] = pred[back, 2] + rng.uniform(0.05, 0.3, back.sum())
    return pred, y


def test_misses_of_a_band_drawn_almost_shut_count_in_a_quarter_of_the_typical_width():
    """Measured in their own 0.01 kW widths the misses come to 5 to 30 widths; in a quarter
    of the typical width (1 kW on the days the model was fitted on) to 0.2 to 1.2."""
    pred, y = _holiday_slice(np.random.default_rng(3))
    band = conformal.band_offsets(pred, y, 0.1, 0.1, typical=1.0)
    assert band.typical_width == 1.0
    assert 0.5 < band.high < 0.9 and band.low <= 0.0
    ordinary = np.array([[0.5, 1.0, 2.0]])  # 1.5 kW wide: moved by its own width
    assert conformal.widen(ordinary, band)[0, 2] == pytest.approx(2.0 + band.high * 1.5)
    narrow = np.array([[0.1, 0.12, 0.13]])  # moved by a quarter of the typical width
    assert conformal.widen(narrow, band)[0, 2] == pytest.approx(0.13 + band.high * 0.25)


def test_no_slice_moves_a_bound_by_more_than_the_most_widths():
    """Without a typical width the same slice asks for 5 to 30 widths: an ordinary day's P90
    would move several kW up. It moves one width at most."""
    pred, y = _holiday_slice(np.random.default_rng(3))
    band = conformal.band_offsets(pred, y, 0.1, 0.1)
    assert band.high == conformal.MOST_WIDTHS
    below = pred[:, 0] + pred[:, 2] - y  # the same misses, under P10
    assert conformal.band_offsets(pred, below, 0.1, 0.1).low == conformal.MOST_WIDTHS
    assert conformal.widen(np.array([[0.5, 1.0, 2.0]]), band)[0, 2] == pytest.approx(3.5)


def test_a_trained_band_knows_the_typical_width_of_the_model_that_calibrated_it():
    """Load of 1 kW plus N(0, 1) noise: the calibrating model's P10-P90 band is about
    2.56 kW wide on the rows it was fitted on, and the band keeps that as its typical width."""
    rng = np.random.default_rng(7)
    issues = pd.date_range("2024-04-01", periods=60, freq="6h", tz="UTC")
    horizons = np.tile(np.arange(1, 25), len(issues))
    issued = np.repeat(issues, 24)
    rows = pd.DataFrame({name: np.nan for name in dz.FEATURES}, index=range(len(issued)))
    rows[dz.ISSUED_AT], rows[dz.HORIZON_STEPS] = issued, horizons
    rows[dz.TARGET_TS] = issued + pd.to_timedelta(15 * horizons, unit="min")
    rows["horizon_hours"], rows[dz.LAST] = horizons / 4, 1.0
    rows[dz.Y], rows[dz.DAYTIME], rows[dd.DEVICE_ID] = 1.0 + rng.normal(0.0, 1.0, len(rows)), True, "home"
    model = fit_primary(rows, LOAD_KW, {"n_estimators": 10, "n_jobs": 1}, calibration_size=0.2)
    assert 2.0 < model.band.typical_width < 3.2
