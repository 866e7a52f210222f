"""The clear-sky index of PV: measured output over the declared array's clear-sky output.

A day-ahead PV forecast without a weather forecast cannot know tomorrow's clouds; what it
can know is the sun (clear-sky output, exact) and how cloudy this time of day has been
lately. Working in the index separates the two: the index is near 1 under a clear sky at
any season, hour or array size, so recent days at the same time of day, and the same
season's days, are directly comparable, and a forecast of the index times the clear-sky
output is a forecast in kW that is exactly 0 while the sun is down.

The clear-sky output is always ``der_physics.solar.clearsky_ac_kw`` (the place's
climatological clear sky), and the index always :func:`index_of` where :func:`sun_up`: the
features, the forecasters, stored weather issues, the planner's persistence and the
benchmarks divide by the same thing, so an index from one is an index for all.
"""

from __future__ import annotations

import numpy as np

#: Below this share of the AC limit the sun is effectively down: the index there is a division
#: by (almost) nothing at dawn and dusk, and the output too small to matter.
NIGHT_SHARE = 0.01
MAX_RATIO = 2.0  # cloud-edge enhancement stays well below this; larger values are noise


def sun_up(clear_kw: np.ndarray, inverter_kw: float) -> np.ndarray:
    """Where the clear-sky output reaches ``NIGHT_SHARE`` of the AC limit: below it the
    index is a division by almost nothing, and the output too small to matter."""
    return np.asarray(clear_kw, dtype="float64") > NIGHT_SHARE * max(inverter_kw, 1e-9)


def index_of(pv_kw: np.ndarray, clear_kw: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Measured over clear-sky output within ``[0, MAX_RATIO]``; NaN with the sun down or the
    reading missing."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.asarray(pv_kw, dtype="float64") / np.asarray(clear_kw, dtype="float64")
    return np.where(up, np.clip(ratio, 0.0, MAX_RATIO), np.nan)


def index_by_day(pv_kw: np.ndarray, clear_kw: np.ndarray, up: np.ndarray) -> np.ndarray:
    """:func:`index_of` while the sun is up, 0 while it is down: the night's index as a
    feature or a forecast, where night means no output, not an unknown one."""
    return np.where(up, index_of(pv_kw, clear_kw, up), 0.0)


def span_index(pv_kw: np.ndarray, clear_kw: np.ndarray, up: np.ndarray) -> float:
    """The index of a span of readings: each sun-up instant's :func:`index_of` weighted by its
    clear-sky output (the measured energy over the clear-sky energy, each instant within
    ``[0, MAX_RATIO]``), so the hours that make the energy count most; NaN without a sun-up
    reading."""
    n = len(np.asarray(clear_kw))
    return float(trailing_index(pv_kw, clear_kw, up, np.array([n - 1]), n)[0]) if n else float("nan")


def trailing_index(pv_kw: np.ndarray, clear_kw: np.ndarray, up: np.ndarray, ends: np.ndarray, window: int) -> np.ndarray:
    """:func:`span_index` of the ``window`` readings up to and including each position in
    ``ends`` (fewer at the start of the series): how clear the last hours have been, for
    every issue time in one pass of running sums."""
    clear = np.asarray(clear_kw, dtype="float64")
    index = index_of(pv_kw, clear, up)
    known = np.isfinite(index)
    energy = np.concatenate([[0.0], np.cumsum(np.where(known, index * clear, 0.0))])
    weight = np.concatenate([[0.0], np.cumsum(np.where(known, clear, 0.0))])
    ends = np.asarray(ends, dtype=np.int64)
    start = np.clip(ends + 1 - window, 0, None)
    spanned = weight[ends + 1] - weight[start]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(spanned > 0.0, (energy[ends + 1] - energy[start]) / spanned, np.nan)


def same_time_quantiles(index: np.ndarray, per_day: int, days: int, levels: tuple[float, ...]) -> np.ndarray:
    """For each position ``p``, the quantiles ``levels`` of ``index[p - k * per_day]`` over
    ``k = 0 .. days - 1`` (missing days left out; NaN where none is known): shape
    ``(len(levels), len(index))``. Position ``p`` itself and earlier ones only, so a
    feature read at a position at or before the issue time sees nothing later."""
    n = len(index)
    stack = np.full((days, n), np.nan)
    for k in range(days):
        shift = k * per_day
        if shift < n:
            stack[k, shift:] = index[: n - shift]
    return nan_quantiles(stack, levels)


def nan_quantiles(stack: np.ndarray, levels: tuple[float, ...]) -> np.ndarray:
    """``np.nanquantile(stack, levels, axis=0)``, the same numbers to the last bit (its
    linear method: the virtual index ``(n - 1) q`` over each column's known values, and its
    two-sided interpolation), NaN for a column without a known value. NumPy takes a column
    with a NaN one by one in Python; sorting the whole stack once (NaN sort last) and
    indexing each column's known values is a few hundred times faster, which every design
    matrix, and so every plan on the trained models, pays."""
    ordered = np.sort(stack, axis=0)
    count = (~np.isnan(stack)).sum(axis=0)
    out = np.full((len(levels), stack.shape[1]), np.nan)
    columns = np.flatnonzero(count > 0)
    last = count[columns] - 1
    for row, level in enumerate(levels):
        virtual = last.astype("float64") * level
        below = np.floor(virtual)
        gamma = virtual - below
        low = np.minimum(below.astype(np.int64), last)
        a, b = ordered[low, columns], ordered[np.minimum(low + 1, last), columns]
        step = b - a
        out[row, columns] = np.where(gamma >= 0.5, b - step * (1 - gamma), a + step * gamma)
    return out


def to_kw(index: np.ndarray, clear_kw: np.ndarray, up: np.ndarray) -> np.ndarray:
    """An index forecast back in kW: index times clear-sky output, 0 with the sun down."""
    index = np.asarray(index, dtype="float64")
    clear = np.asarray(clear_kw, dtype="float64")
    up = np.asarray(up, dtype=bool)
    if index.ndim == 2:
        clear, up = clear[:, None], up[:, None]
    return np.where(up, np.clip(index, 0.0, MAX_RATIO) * clear, 0.0)
