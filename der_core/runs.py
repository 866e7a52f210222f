"""Runs of a boolean mask, found once: gaps in a series, blank cells, a sensor above a
threshold and a fleet's event windows are all the same question of where a condition
starts holding and where it stops."""

from __future__ import annotations

import numpy as np


def true_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each run of True in ``mask``: its first position and the position after its last
    (``stops - starts`` is its length), in order."""
    edges = np.diff(np.concatenate([[0], np.asarray(mask, dtype=np.int8), [0]]))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
