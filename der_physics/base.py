"""Shared machinery of the simulators: time axes and random-access seeded noise.

Every stochastic process lives on a fixed grid anchored at the Unix epoch (15 minutes for
clouds, one day for weather regimes, ...), never on the query's own steps. Grid values are
drawn in blocks from generators seeded by ``(seed, stream, block)``, and autocorrelated
processes are finite moving averages of those draws. The value at an instant therefore
depends only on the seed and the instant, so ``--once``, ``--continuous``, ``--historical``
and fleet runs agree bit for bit on any instant they share, whatever range they compute.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from threading import RLock

import numba
import numpy as np
import pandas as pd

BLOCK = 4096  # grid points drawn per generator; any value works, it only trades memory for calls

# Stream identifiers: each stochastic process draws from its own stream so adding a process
# never shifts another's numbers.
STREAM = {
    "cloud_day": 1,
    "cloud_intraday": 2,
    "temp_day": 3,
    "temp_hour": 4,
    "wind": 5,
    "appliance": 6,
    "appliance_burst": 7,
    "ev": 8,
    "price": 9,
    "price_spike": 10,
    "other_load": 11,
    "carbon": 12,
    "forecast_error": 13,
}


@dataclass(frozen=True)
class TimeAxis:
    """Instants of a simulation: UTC epoch seconds plus the pieces physics needs."""

    times: pd.DatetimeIndex  # tz-aware UTC

    @classmethod
    def from_times(cls, times) -> TimeAxis:
        index = pd.DatetimeIndex(times)
        index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
        return cls(index.as_unit("us"))

    # Time-only quantities are cached: a fleet shares one axis across thousands of sites.
    @cached_property
    def epoch_s(self) -> np.ndarray:
        return self.times.asi8 / 1e6

    @cached_property
    def day_of_year(self) -> np.ndarray:
        """Fractional day of year (1-based), UTC."""
        t = self.times
        return (t.day_of_year + (t.hour * 3600 + t.minute * 60 + t.second) / 86400.0).to_numpy(dtype=float)

    def local(self, tz: str) -> pd.DatetimeIndex:
        return self.times.tz_convert(tz)

    def __len__(self) -> int:
        return len(self.times)


#: Below this many site-steps (a millisecond or so of work) a second thread costs more than it
#: saves, however many sites there are: a live step of a fleet, or a controller stepping many
#: candidate batteries one reading at a time.
PARALLEL_MIN_SITE_STEPS = 100_000


def over_site_halves(n_sites: int, n_steps: int, part: Callable[[slice], None], min_sites: int) -> None:
    """Call ``part(rows)`` over every site: once for all of them below ``min_sites`` sites or
    :data:`PARALLEL_MIN_SITE_STEPS` site-steps, else for each half of the fleet on its own
    thread. Sites are independent and the work releases the GIL (numpy kernels, compiled
    loops), so ``part`` just writes its rows of shared outputs."""
    if n_sites < min_sites or n_sites * n_steps < PARALLEL_MIN_SITE_STEPS:
        part(slice(0, n_sites))
        return
    import dask

    half = n_sites // 2
    dask.compute(dask.delayed(part)(slice(0, half)), dask.delayed(part)(slice(half, n_sites)), scheduler="threads")


def grid_draws(seed: int, stream: str, first: int, count: int, kind: str = "normal") -> np.ndarray:
    """Draws for grid points ``first .. first+count-1`` of one seeded stream.

    ``kind`` is ``"normal"`` (standard normal) or ``"uniform"`` ([0, 1)). Random access:
    the value of a grid point never depends on which range was asked for.
    """
    if count <= 0:
        return np.empty(0)
    out = np.empty(count)
    block_first, block_last = first // BLOCK, (first + count - 1) // BLOCK
    for block in range(block_first, block_last + 1):
        rng = np.random.default_rng([int(seed), STREAM[stream], kind == "uniform", block + 2**40])
        values = rng.random(BLOCK) if kind == "uniform" else rng.standard_normal(BLOCK)
        lo = max(first, block * BLOCK)
        hi = min(first + count, (block + 1) * BLOCK)
        out[lo - first : hi - first] = values[lo - block * BLOCK : hi - block * BLOCK]
    return out


def grid_span(epoch_s: np.ndarray, grid_s: float, pad_before: int = 0, pad_after: int = 1) -> tuple[int, int]:
    """First grid index and count covering ``epoch_s`` (with padding) on a ``grid_s`` grid."""
    first = int(np.floor(np.min(epoch_s) / grid_s)) - pad_before
    last = int(np.floor(np.max(epoch_s) / grid_s)) + pad_after
    return first, last - first + 1


def moving_average_weights(phi: float, length: int) -> np.ndarray:
    """Weights of a truncated AR(1) as a moving average, scaled to unit variance."""
    weights = phi ** np.arange(length + 1)
    return weights / np.sqrt(np.sum(weights**2))


def ar1_grid(seed: int, stream: str, first: int, count: int, phi: float, memory: int) -> np.ndarray:
    """An AR(1)-like unit-variance process at grid points ``first .. first+count-1``.

    A finite moving average (``memory`` lags) rather than a recursion: each value is the
    same sum of the same draws whatever range is computed, which keeps modes identical.
    """
    eps = grid_draws(seed, stream, first - memory, count + memory)
    weights = moving_average_weights(phi, memory)
    out = np.zeros(count)
    for lag, weight in enumerate(weights):  # elementwise sums: identical per element for any range
        out += weight * eps[memory - lag : memory - lag + count]
    return out


_DERIVED: list[tuple[np.ndarray, object, object]] = []  # small identity-keyed cache, see derived()
_DERIVED_LOCK = RLock()  # fleets compute sites on several threads; computations may nest


def derived(source: np.ndarray, key, compute: Callable[[], object]):
    """``compute()``, a function of the array ``source`` (and ``key``) alone, kept for reuse.

    Every site of a fleet shares one time axis, so whatever depends only on its instants
    (grid positions, the local clock's occupancy profiles and tariff periods, the season)
    is computed for the first site and reused by the rest. Entries are keyed by the source
    array's identity, which the cache holds on to, and the last few dozen are kept.
    """
    with _DERIVED_LOCK:  # a second thread waits for the value rather than computing it again
        for array, k, value in _DERIVED:
            if array is source and k == key:
                return value
        value = compute()
        _DERIVED.insert(0, (source, key, value))
        del _DERIVED[48:]
        return value


def _grid_position(epoch_s: np.ndarray, grid_s: float) -> tuple[int, int, np.ndarray, np.ndarray]:
    """First grid point, count, slot index and fraction of each instant on a grid."""

    def compute():
        first, count = grid_span(epoch_s, grid_s)
        position = epoch_s / grid_s - first
        index = np.floor(position).astype(np.int64)
        return first, count, index, position - index

    return derived(epoch_s, ("grid", grid_s), compute)


@numba.njit(cache=True, nogil=True)
def _moving_average_at(eps: np.ndarray, weights: np.ndarray, index: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """:func:`ar1_grid`'s sums, interpolated to the instants, in one compiled pass.

    Grid value j is the same sum in the same order as ``ar1_grid`` computes, so every mode
    still sees the same value at an instant; ``nogil`` lets fleet threads run it in parallel.
    """
    memory = weights.shape[0] - 1
    count = eps.shape[0] - memory
    values = np.zeros(count)
    for start in range(0, count, 1024):  # a block of sums stays in L1 cache while every lag is added
        stop = min(start + 1024, count)
        block = values[start:stop]
        for lag in range(memory + 1):  # lag outermost: no carried sum, and slice arithmetic vectorises
            block += weights[lag] * eps[memory + start - lag : memory + stop - lag]
    return _interpolate(values, index, frac)


@numba.njit(cache=True, nogil=True)
def _interpolate(values: np.ndarray, index: np.ndarray, frac: np.ndarray) -> np.ndarray:
    out = np.empty(index.shape[0])
    for i in range(index.shape[0]):
        out[i] = values[index[i]] * (1.0 - frac[i]) + values[index[i] + 1] * frac[i]
    return out


def smooth_process(seed: int, stream: str, epoch_s: np.ndarray, grid_s: float, phi: float, memory: int) -> np.ndarray:
    """A unit-variance autocorrelated process on a grid, linearly interpolated to ``epoch_s``."""
    first, count, index, frac = _grid_position(epoch_s, grid_s)
    eps = grid_draws(seed, stream, first - memory, count + memory)
    return _moving_average_at(eps, moving_average_weights(phi, memory), index, frac)


def interpolate(epoch_s: np.ndarray, grid_s: float, values: np.ndarray) -> np.ndarray:
    """Linear interpolation of values on the grid points :func:`grid_span` gives for ``epoch_s``."""
    _, count, index, frac = _grid_position(epoch_s, grid_s)
    return _interpolate(np.ascontiguousarray(values[:count], dtype=float), index, frac)


def slot_process(seed: int, stream: str, epoch_s: np.ndarray, grid_s: float, kind: str = "uniform") -> np.ndarray:
    """Independent draws per grid slot, held over the slot."""
    first, count, index, _ = _grid_position(epoch_s, grid_s)
    return grid_draws(seed, stream, first, count, kind)[index]


def interval_clock(axis: TimeAxis, tz: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`local_clock` of the interval each instant ends (a reading's time is the end of
    the interval it describes): the clock just before the instant. A tariff prices the
    interval by the period in force over it, so the interval ending 16:00 is priced before a
    16:00 peak begins and the one ending 21:00 inside it, and the interval ending at midnight
    on the day it lies in."""
    return local_clock(TimeAxis(axis.times - pd.Timedelta(microseconds=1)), tz)


def local_clock(axis: TimeAxis, tz: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local hour of day (fractional), day of week (Mon=0) and local date as days since epoch."""
    local = axis.local(tz)
    hour = (local.hour + local.minute / 60.0 + local.second / 3600.0).to_numpy(dtype=float)
    weekday = local.day_of_week.to_numpy()
    naive = local.tz_localize(None).as_unit("us").asi8
    local_day = np.floor_divide(naive, 86_400 * 10**6)
    return hour, weekday, local_day
