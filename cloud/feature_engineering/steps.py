"""Per-step aggregates of time-ordered readings, in numpy: the values pandas' groupby gives,
without its per-call overhead, which cost more than the sums themselves for a site of 9,000
readings.

Rows are grouped in runs of equal, sorted step keys. Sums follow pandas (2.2 onwards for
blocks with a missing value, 3.x otherwise): a block without NaN is summed per run by
``np.add.reduceat`` along its rows, one with NaN by compensated (Kahan) summation in row
order, skipping NaN. Tests check both against pandas itself on random readings with NaN,
infinities and gaps, so a rebuild writes the same bits as before.
"""

from __future__ import annotations

import numpy as np


def run_starts(keys: np.ndarray) -> np.ndarray:
    """Where each run of equal ``keys`` (sorted) starts."""
    if not len(keys):
        return np.zeros(0, dtype=np.intp)
    return np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])


def run_sizes(starts: np.ndarray, rows: int) -> np.ndarray:
    return np.diff(starts, append=rows)


def means(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Mean of each run of the rows of ``values`` (rows x columns), NaN skipped; NaN where
    a run has no value."""
    if not np.isnan(values).any():
        return _segment_sums(values, starts) / run_sizes(starts, len(values))[:, None]
    sums, counts = _compensated_sums(values, starts)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def sums(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Sum of each run (``min_count=1``: NaN where a run has no value)."""
    if not np.isnan(values).any():
        return _segment_sums(values, starts)
    sums_, counts = _compensated_sums(values, starts)
    return np.where(counts > 0, sums_, np.nan)


def last_present(present: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The row of each run's last present value, -1 where a run has none."""
    rows = np.where(present, np.arange(len(present)), -1)
    return np.maximum.reduceat(rows, starts) if len(starts) else np.zeros(0, dtype=np.intp)


def _segment_sums(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    # Along contiguous rows of the transposed block, as pandas hands a block to reduceat:
    # runs longer than eight values are then summed pairwise, the same way.
    return np.add.reduceat(np.ascontiguousarray(values.T), starts, axis=1).T


def _compensated_sums(values: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kahan sums and counts of each run's non-NaN values, in row order: one vector step per
    position within the runs, so every run sees exactly the scalar recurrence."""
    sizes = run_sizes(starts, len(values))
    total = np.zeros((len(starts), values.shape[1]))
    carry = np.zeros_like(total)
    counts = np.zeros(total.shape, dtype=np.int64)
    with np.errstate(invalid="ignore"):
        for offset in range(int(sizes.max()) if len(sizes) else 0):
            runs = np.flatnonzero(sizes > offset)
            value = values[starts[runs] + offset]
            present = ~np.isnan(value)
            before, compensation = total[runs], carry[runs]
            y = value - compensation
            t = before + y
            new_compensation = (t - before) - y
            # An infinite value makes the compensation NaN, which would turn the sum into
            # NaN rather than the infinity it is.
            new_compensation[np.isnan(new_compensation)] = 0.0
            total[runs] = np.where(present, t, before)
            carry[runs] = np.where(present, new_compensation, compensation)
            counts[runs] += present
    return total, counts
