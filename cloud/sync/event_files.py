"""Event files: one row per state change of one entity, as Home Assistant's history panel
downloads them (``entity_id,state,last_changed``, the entities one after another), turned
into readings on a regular grid.

An entity's state holds from its time until the entity's next state: Home Assistant
records a state when it changes, so a sensor that stays at 0 all night writes nothing
until the morning. ``unavailable`` and ``unknown`` end the hold without a value. A reading
at grid instant ``T`` describes the :data:`STEP` ending at ``T`` (as every reading does):
the time-weighted mean of the states that held in it, kept where they cover at least half
of it (less is a gap, not a guess). A meter total (``Wh-total``, ``kWh-total``) gives the
mean power from the total interpolated at the step's two ends, and none where the step is
not bracketed by known totals, an ``unavailable`` lies between them, or the total falls (a
reset). Nothing after the entity's last state is invented: its last state holds until its
own time only.

The grid is built once every row has been read, so the entities may come in any order
and each entity's states in any order; memory grows with the number of states, 16 bytes
each, not with the file's text.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cloud.sync.timestamps import normal_name
from der_core import der_data as dd

#: The grid of readings made from an event file: fine enough to keep a household's bursts,
#: coarse enough that a year of one site is about 105,000 readings.
STEP = pd.Timedelta(minutes=5)
#: States that say the entity had no value, ending the state before them.
NO_VALUE = frozenset({"unavailable", "unknown", "none", "nan", ""})
ENTITY_NAMES = ("entity_id", "entity")
STATE_NAMES = ("state", "value")


def event_columns(columns: Sequence[object]) -> tuple[str, str] | None:
    """``(entity column, state column)`` of an event file, None for a file of one reading
    per row."""
    names = {normal_name(c): str(c) for c in reversed(list(columns))}
    entity = next((names[n] for n in ENTITY_NAMES if n in names), None)
    state = next((names[n] for n in STATE_NAMES if n in names), None)
    return (entity, state) if entity and state else None


@dataclass
class Events:
    """Every entity's states as read so far: times in microseconds since the epoch (UTC) and
    values (NaN for :data:`NO_VALUE`)."""

    times: dict[str, list[np.ndarray]] = field(default_factory=lambda: defaultdict(list))
    values: dict[str, list[np.ndarray]] = field(default_factory=lambda: defaultdict(list))

    def add(self, entity: str, micros: np.ndarray, values: np.ndarray) -> None:
        self.times[entity].append(np.asarray(micros, dtype=np.int64))
        self.values[entity].append(np.asarray(values, dtype="float64"))

    def of(self, entity: str) -> tuple[np.ndarray, np.ndarray]:
        """The entity's states in time order; of states at the same instant, the later row's."""
        if entity not in self.times:
            return np.empty(0, dtype=np.int64), np.empty(0)
        t, v = np.concatenate(self.times[entity]), np.concatenate(self.values[entity])
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[order]
        last = np.r_[t[1:] != t[:-1], True]
        return t[last], v[last]


def grid_of(times: Sequence[np.ndarray], step: pd.Timedelta = STEP) -> np.ndarray:
    """The grid instants (microseconds) from the first step ending after any entity's first
    state to the last step ending at or before any entity's last state, given each entity's
    state times in order (:meth:`Events.of`)."""
    spans = [t for t in times if len(t)]
    if not spans:
        return np.empty(0, dtype=np.int64)
    size = int(step / pd.Timedelta(microseconds=1))
    first = min(int(t[0]) for t in spans) // size * size + size
    last = max(int(t[-1]) for t in spans) // size * size
    return np.arange(first, last + 1, size, dtype=np.int64)


def held_means(t: np.ndarray, v: np.ndarray, grid: np.ndarray, step: pd.Timedelta = STEP) -> np.ndarray:
    """Time-weighted mean of the held states over each step ending at a grid instant; NaN
    where known states cover less than half of it."""
    if len(t) == 0 or len(grid) == 0:
        return np.full(len(grid), np.nan)
    seconds = (t - t[0]) / 1e6
    ends = np.r_[seconds[1:], seconds[-1]]  # the last state holds until its own time only
    known = np.isfinite(v)
    with np.errstate(over="ignore", invalid="ignore"):  # states near float's limit: inf, which validation refuses
        area = np.r_[0.0, np.cumsum(np.where(known, v * (ends - seconds), 0.0))]
    cover = np.r_[0.0, np.cumsum(np.where(known, ends - seconds, 0.0))]

    def integral(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = np.searchsorted(seconds, x, side="right") - 1
        kk = np.clip(k, 0, len(seconds) - 1)
        part = np.where(k >= 0, np.clip(x - seconds[kk], 0.0, ends[kk] - seconds[kk]), 0.0)
        held = np.where(k >= 0, known[kk], False)
        return (np.where(k >= 0, area[kk], 0.0) + np.where(held, np.nan_to_num(v[kk]) * part, 0.0),
                np.where(k >= 0, cover[kk], 0.0) + np.where(held, part, 0.0))

    right = (grid - t[0]) / 1e6
    (a1, c1), (a0, c0) = integral(right), integral(right - step.total_seconds())
    covered = c1 - c0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return np.where(covered >= step.total_seconds() / 2, (a1 - a0) / covered, np.nan)


def total_rates(t: np.ndarray, v: np.ndarray, grid: np.ndarray, step: pd.Timedelta = STEP) -> np.ndarray:
    """A meter total's mean rise per hour over each step ending at a grid instant: the total
    interpolated at both ends between the known totals around them; NaN where the step is not
    bracketed by known totals, a state without a value lies between them, or the total falls."""
    if len(grid) == 0:
        return np.empty(0)
    known = np.isfinite(v)
    tk, vk = t[known], v[known]
    if len(tk) < 2:
        return np.full(len(grid), np.nan)
    size = int(step / pd.Timedelta(microseconds=1))
    start = grid - size
    below = np.searchsorted(tk, start, side="right") - 1  # the known total at or before the step's start
    above = np.searchsorted(tk, grid, side="left")  # the known total at or after its end
    ok = (below >= 0) & (above < len(tk))
    lo, hi = np.clip(below, 0, len(tk) - 1), np.clip(above, 0, len(tk) - 1)
    unknown = np.r_[0, np.cumsum(~known)]  # states without a value up to each state
    position = np.flatnonzero(known)
    ok &= unknown[position[hi] + 1] - unknown[position[lo]] == 0
    falls = np.r_[0, np.cumsum(np.diff(vk) < 0)]
    ok &= falls[hi] - falls[lo] == 0
    with np.errstate(over="ignore", invalid="ignore"):  # totals near float's limit rise to inf, which validation refuses
        rise = (np.interp(grid.astype("float64"), tk.astype("float64"), vk)
                - np.interp(start.astype("float64"), tk.astype("float64"), vk))
        return np.where(ok, rise / (step / pd.Timedelta(hours=1)), np.nan)


def state_values(states: pd.Series, numbers) -> tuple[np.ndarray, np.ndarray]:
    """``(values, unreadable)``: each state as a number (NaN for :data:`NO_VALUE`), and where
    a state is neither."""
    text = states.astype("string").str.strip()
    no_value = text.isna() | text.str.lower().isin(NO_VALUE).fillna(False).astype(bool)
    values = numbers(states).to_numpy(dtype="float64")
    unreadable = np.isnan(values) & ~no_value.to_numpy()
    return np.where(no_value.to_numpy(), np.nan, values), unreadable


def readings_frame(device_id: str, grid: np.ndarray, columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """Flat readings at the grid instants where some field has a value."""
    frame = pd.DataFrame({dd.DEVICE_ID: device_id,
                          dd.TS: pd.to_datetime(grid, unit="us", utc=True).astype("datetime64[us, UTC]")})
    for column in dd.FIELD_TYPES:
        frame[column] = columns.get(column, np.full(len(grid), np.nan)) if column != dd.TOU_PERIOD else None
    values = frame[list(columns)].to_numpy(dtype="float64") if columns else np.empty((len(grid), 0))
    return frame[np.isfinite(values).any(axis=1)].reset_index(drop=True)
