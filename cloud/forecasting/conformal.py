"""Split-conformal calibration of a P10-P90 band (conformalised quantile regression).

Quantile models fitted on one period are rarely calibrated on the next: the trees fit the
training truths closely, and seasons and sites drift. The band is calibrated on a slice of
the training period the calibrating models never saw (walk-forward: fitted on what came
before it), one side at a time, with each row's miss measured in units of its own band
width, so a band that is narrow at dawn and wide at noon stays so. A test truth never
enters: the slice lies inside the training period.

For a side with tail probability ``a`` (0.1 below P10), the offset is the conformal
``1 - a`` quantile of ``(P10 - y) / width`` (``(y - P90) / width`` above), and the
calibrated bound moves out by offset times width (in, where the offset is negative).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

class Band(NamedTuple):
    """How far each bound moves, in units of the row's P10-P90 width (out when positive)."""

    low: float
    high: float


NO_BAND = Band(0.0, 0.0)


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The ``ceil((n + 1) level) / n`` empirical quantile of ``scores``: the finite-sample
    level at which a new exchangeable score falls at or below it with probability >= level."""
    scores = np.asarray(scores, dtype="float64")
    n = len(scores)
    rank = min(n, math.ceil((n + 1) * level))
    return float(np.sort(scores)[rank - 1])


def band_offsets(pred: np.ndarray, y: np.ndarray, low_tail: float, high_tail: float) -> Band:
    """The offsets that put ``low_tail`` of ``y`` below P10 and ``high_tail`` above P90 on
    these rows (``pred``: ``(n, 3)`` P10/P50/P90 of models that never saw ``y``). Rows with
    an empty band (a forecast certain of its value, such as PV with the sun down) are left
    out: no offset in units of their width can move them."""
    pred = np.asarray(pred, dtype="float64")
    y = np.asarray(y, dtype="float64")
    width = pred[:, 2] - pred[:, 0]
    ok = np.isfinite(y) & np.all(np.isfinite(pred), axis=1) & (width > 0)
    if not ok.any():
        return NO_BAND
    pred, y, width = pred[ok], y[ok], width[ok]
    return Band(conformal_quantile((pred[:, 0] - y) / width, 1.0 - low_tail),
                conformal_quantile((y - pred[:, 2]) / width, 1.0 - high_tail))


def widen(pred: np.ndarray, band: Band) -> np.ndarray:
    """``pred`` (P10/P50/P90 columns) with P10 and P90 moved by ``band`` times each row's
    width; P50 unchanged, and a bound never crosses P50."""
    if band == NO_BAND:
        return pred
    out = np.array(pred, dtype="float64", copy=True)
    width = out[:, 2] - out[:, 0]
    out[:, 0] = np.minimum(out[:, 0] - band.low * width, out[:, 1])
    out[:, 2] = np.maximum(out[:, 2] + band.high * width, out[:, 1])
    return out
