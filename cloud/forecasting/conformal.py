"""Split-conformal calibration of a P10-P90 band (conformalised quantile regression).

Quantile models fitted on one period are rarely calibrated on the next: the trees fit the
training truths closely, and seasons and sites drift. The band is calibrated on a slice of
the training period the calibrating models never saw (walk-forward: fitted on what came
before it), one side at a time, with each row's miss measured in units of its own band
width, so a band that is narrow at dawn and wide at noon stays so. A test truth never
enters: the slice lies inside the training period.

For a side with tail probability ``a`` (0.1 below P10), the offset is the conformal
``1 - a`` quantile of ``(P10 - y) / unit`` (``(y - P90) / unit`` above), and the calibrated
bound moves out by offset times unit (in, where the offset is negative). A row's unit is its
width, or a quarter of the calibrating model's typical width where its own is narrower: a
band a model draws almost shut (a week of constant load, the return from it) turns any miss into dozens
of widths, and those offsets, multiplied by an ordinary day's width, put a home's P90 at
tens of kW. No offset moves a bound by more than :data:`MOST_WIDTHS` units: a slice unlike
the days the band will serve cannot make it useless (docs/decisions/0024-band-floor-and-cap.md).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

#: The most a calibration slice may move a bound, in units (a band at most three times as wide).
MOST_WIDTHS = 1.0
#: The least unit, as a share of the typical width: the band of a quiet hour (a home at
#: night, PV at dawn) stays narrower than noon's, and only a band drawn almost shut is held open.
LEAST_UNIT = 0.25


class Band(NamedTuple):
    """How far each bound moves, in units of the row's P10-P90 width (out when positive);
    ``typical_width`` (target units) is the calibrating model's typical width, whose
    :data:`LEAST_UNIT` share is the least unit a row with a band is moved by."""

    low: float
    high: float
    typical_width: float = 0.0


NO_BAND = Band(0.0, 0.0)


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The ``ceil((n + 1) level) / n`` empirical quantile of ``scores``: the finite-sample
    level at which a new exchangeable score falls at or below it with probability >= level."""
    scores = np.asarray(scores, dtype="float64")
    n = len(scores)
    rank = min(n, math.ceil((n + 1) * level))
    return float(np.sort(scores)[rank - 1])


def typical_width(pred: np.ndarray) -> float:
    """The median P10-P90 width of the rows with a band (``pred``: ``(n, 3)``), 0 without one."""
    pred = np.asarray(pred, dtype="float64")
    width = pred[:, 2] - pred[:, 0]
    width = width[np.isfinite(width) & (width > 0)]
    return float(np.median(width)) if len(width) else 0.0


def _units(width: np.ndarray, typical: float) -> np.ndarray:
    """Each row's unit: its width, at least ``LEAST_UNIT`` of ``typical``; 0 for an empty band
    (a forecast certain of its value, such as PV with the sun down, stays certain)."""
    return np.where(width > 0, np.maximum(width, LEAST_UNIT * typical), 0.0)


def band_offsets(pred: np.ndarray, y: np.ndarray, low_tail: float, high_tail: float,
                 typical: float = 0.0) -> Band:
    """The offsets that put ``low_tail`` of ``y`` below P10 and ``high_tail`` above P90 on
    these rows (``pred``: ``(n, 3)`` P10/P50/P90 of models that never saw ``y``, whose band
    is ``typical`` wide on the rows they were fitted on), each within ``MOST_WIDTHS``. Rows
    with an empty band are left out: no offset can move them."""
    pred = np.asarray(pred, dtype="float64")
    y = np.asarray(y, dtype="float64")
    width = pred[:, 2] - pred[:, 0]
    ok = np.isfinite(y) & np.all(np.isfinite(pred), axis=1) & (width > 0)
    if not ok.any():
        return NO_BAND
    pred, y, unit = pred[ok], y[ok], _units(width[ok], typical)
    low = conformal_quantile((pred[:, 0] - y) / unit, 1.0 - low_tail)
    high = conformal_quantile((y - pred[:, 2]) / unit, 1.0 - high_tail)
    return Band(*np.clip([low, high], -MOST_WIDTHS, MOST_WIDTHS).tolist(), typical)


def widen(pred: np.ndarray, band: Band) -> np.ndarray:
    """``pred`` (P10/P50/P90 columns) with P10 and P90 moved by ``band`` times each row's
    unit; P50 unchanged, and a bound never crosses P50."""
    if band == NO_BAND:
        return pred
    out = np.array(pred, dtype="float64", copy=True)
    unit = _units(out[:, 2] - out[:, 0], band.typical_width)
    out[:, 0] = np.minimum(out[:, 0] - band.low * unit, out[:, 1])
    out[:, 2] = np.maximum(out[:, 2] + band.high * unit, out[:, 1])
    return out
