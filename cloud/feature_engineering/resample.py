"""One site's readings onto a regular grid, with the right aggregate per column and bounded,
causal gap filling.

Grid instants are whole multiples of the step since the Unix epoch. A reading at ``ts``
describes the interval ending at ``ts`` (der_physics.generator), so grid instant ``T``
aggregates the readings with ``T - step < ts <= T`` (right-closed, right-labelled): the
value at ``T`` never uses a reading after ``T``.

Gaps are filled forward only, and for at most ``max_gap`` after the last observed step.
Interpolation, or leaving a gap empty because it later turns out to be long, would both
make the value at ``T`` depend on readings after ``T`` (whether a gap will be long is not
known while it is happening), which is leakage for a forecaster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cloud.feature_engineering import steps as st
from der_core import der_data as dd
from der_core.runs import true_runs

#: Power, irradiance, temperature and price columns: the mean over the step.
MEAN_COLUMNS: tuple[str, ...] = (
    dd.SOLAR_KW, dd.LOAD_TOTAL, dd.LOAD_EV, dd.BATTERY_POWER, dd.NET_GRID_FLOW, dd.SOLAR_IRRADIANCE,
    dd.PANEL_TEMP, dd.PRICE, dd.FEED_IN, dd.CARBON,
)
#: States: the last value in the step (the state at the grid instant).
LAST_COLUMNS: tuple[str, ...] = (dd.BATTERY_SOC, dd.TOU_PERIOD)

# Energy per step (kWh), summed from each reading's power times the interval it covers.
SOLAR_KWH, LOAD_KWH, IMPORT_KWH, EXPORT_KWH = "solar_kwh", "load_kwh", "grid_import_kwh", "grid_export_kwh"
ENERGY_COLUMNS: tuple[str, ...] = (SOLAR_KWH, LOAD_KWH, IMPORT_KWH, EXPORT_KWH)

READINGS_IN_STEP = "readings_in_step"  # 0 on a step that had no reading (filled or missing)
FILLED = "filled"  # 1.0 where the step's values were carried forward over a gap
OBSERVED = "observed"  # True where the step had at least one reading


@dataclass(frozen=True)
class Gap:
    """A run of grid steps without any reading."""

    start: pd.Timestamp  # first empty grid instant
    end: pd.Timestamp  # last empty grid instant
    steps: int
    filled_steps: int  # carried forward (at most max_gap)
    missing_steps: int  # left missing

    @property
    def duration(self) -> pd.Timedelta:
        return self.end - self.start


@dataclass(frozen=True)
class Resampled:
    grid: pd.DataFrame  # indexed by the grid instants, regular, named ``ts``
    gaps: tuple[Gap, ...]


def grid_instants(ts: pd.Series | pd.DatetimeIndex, step: pd.Timedelta) -> pd.DatetimeIndex:
    """The grid instant each timestamp belongs to (the first multiple of ``step`` at or after it)."""
    return pd.DatetimeIndex(ts).ceil(step)


def _energy(readings: pd.DataFrame, step: pd.Timedelta) -> np.ndarray:
    """Each reading's energy (kWh) over the interval it covers, one column per
    :data:`ENERGY_COLUMNS`: the time since the previous reading, capped at one step so a
    reading after an outage is not credited with the outage. The first reading has no known
    interval and contributes nothing (NaN)."""
    stamps = pd.DatetimeIndex(readings[dd.TS])
    since_previous = (stamps[1:] - stamps[:-1]).total_seconds().to_numpy()
    dt_h = np.clip(np.concatenate(([np.nan], since_previous)), None, step.total_seconds()) / 3600.0
    net = readings[dd.NET_GRID_FLOW].to_numpy(dtype="float64", na_value=np.nan)
    solar, load = (readings[c].to_numpy(dtype="float64", na_value=np.nan) for c in (dd.SOLAR_KW, dd.LOAD_TOTAL))
    return np.column_stack([solar * dt_h, load * dt_h, np.clip(net, 0.0, None) * dt_h, np.clip(-net, 0.0, None) * dt_h])


def resample_site(readings: pd.DataFrame, step: pd.Timedelta, max_gap: pd.Timedelta) -> Resampled:
    """Resample one site's flat readings (any order, unique ``ts``) onto the regular grid
    spanning its first to its last reading."""
    if readings[dd.DEVICE_ID].nunique() > 1:
        raise ValueError("resample_site expects the readings of one site")
    if readings.empty:
        return Resampled(_empty_grid(), ())
    if not readings[dd.TS].is_monotonic_increasing:  # stores return them in order
        readings = readings.sort_values(dd.TS, kind="stable")
    readings = readings.reset_index(drop=True)
    bins = grid_instants(readings[dd.TS], step)
    starts = st.run_starts(bins.asi8)
    index = pd.date_range(bins[0], bins[-1], freq=step, name=dd.TS)
    slots = index.get_indexer(bins[starts])  # each observed step's row on the grid
    limit = int(max_gap // step)
    present = np.zeros(len(index), dtype=bool)
    present[slots] = True
    columns: dict[str, Any] = {}
    for name, values in _observed_steps(readings, step, starts).items():
        if name in LAST_COLUMNS:  # rows of the readings, taken at the end so text keeps its dtype
            rows = np.full(len(index), -1, dtype=np.intp)
            rows[slots] = values
            source = _carried_from(rows >= 0, limit)
            columns[name] = readings[name].array.take(np.where(source >= 0, rows[source], -1), allow_fill=True)
        else:
            on_grid = np.full(len(index), np.nan)
            on_grid[slots] = values
            source = _carried_from(~np.isnan(on_grid), limit)
            columns[name] = np.where(source >= 0, on_grid[source], np.nan)
    columns[READINGS_IN_STEP] = np.zeros(len(index))
    columns[READINGS_IN_STEP][slots] = st.run_sizes(starts, len(readings))
    columns[FILLED] = _filled_mask(present, limit).astype("float64")
    columns[OBSERVED] = present
    return Resampled(pd.DataFrame(columns, index=index), tuple(_gaps(index, present, limit)))


def _observed_steps(readings: pd.DataFrame, step: pd.Timedelta, starts: np.ndarray) -> dict[str, np.ndarray]:
    """Each observed step's aggregates (one value per run of readings), column by column in
    the grid's order; for the last-value columns, the row holding it (-1: none)."""
    means = st.means(readings[list(MEAN_COLUMNS)].to_numpy(dtype="float64", na_value=np.nan), starts)
    energy = st.sums(_energy(readings, step), starts)
    columns = dict(zip(MEAN_COLUMNS, means.T))
    columns.update({c: st.last_present(readings[c].notna().to_numpy(), starts) for c in LAST_COLUMNS})
    columns.update(zip(ENERGY_COLUMNS, energy.T))
    return columns


def _carried_from(valid: np.ndarray, limit: int) -> np.ndarray:
    """The row each grid row shows after filling forward at most ``limit`` rows
    (``DataFrame.ffill(limit=...)``): itself when valid, else the last valid row if it is
    close enough, else -1."""
    positions = np.arange(len(valid))
    last = np.maximum.accumulate(np.where(valid, positions, -1))
    return np.where(valid | ((last >= 0) & (positions - last <= limit)), last, -1)


def _filled_mask(present: np.ndarray, limit: int) -> np.ndarray:
    """True on empty steps within ``limit`` steps of the last observed one."""
    positions = np.arange(len(present))
    last_seen = np.maximum.accumulate(np.where(present, positions, -1))
    return ~present & (last_seen >= 0) & (positions - last_seen <= limit)


def _gaps(index: pd.DatetimeIndex, present: np.ndarray, limit: int):
    empty = ~present
    if not empty.any():
        return
    for first, stop in zip(*true_runs(empty)):
        steps = int(stop - first)
        filled = min(steps, limit)
        yield Gap(index[first], index[stop - 1], steps, filled, steps - filled)


def _empty_grid() -> pd.DataFrame:
    index = pd.DatetimeIndex([], tz="UTC", name=dd.TS).as_unit("us")
    columns = [*MEAN_COLUMNS, *LAST_COLUMNS, *ENERGY_COLUMNS, READINGS_IN_STEP, FILLED]
    grid = pd.DataFrame({c: pd.Series(dtype="float64") for c in columns}, index=index)
    grid[dd.TOU_PERIOD] = grid[dd.TOU_PERIOD].astype("str")
    grid[OBSERVED] = pd.Series(dtype=bool)
    return grid
