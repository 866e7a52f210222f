"""Row validation before readings reach the cloud: a missing number where one is required, or
a value outside its physical range, sends the row to quarantine with the reason; the other
rows go on. Pure functions over a flat frame."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from der_core import der_data as dd

_LOAD_KW = (0.0, 10_000.0)

#: Physical bounds (inclusive) of each numeric field: wide enough for any real home or
#: simulated fleet, narrow enough to catch unit mix-ups (W sent as kW) and sensor garbage.
RANGES: dict[str, tuple[float, float]] = {
    dd.SOLAR_KW: (0.0, 10_000.0),
    dd.SOLAR_IRRADIANCE: (0.0, 1_500.0),
    dd.PANEL_TEMP: (-60.0, 120.0),
    dd.flat_name("solar", "efficiency_percent"): (0.0, 100.0),
    dd.BATTERY_SOC: (0.0, 100.0),
    dd.BATTERY_CAPACITY: (0.0, 100_000.0),
    dd.BATTERY_POWER: (-10_000.0, 10_000.0),
    dd.BATTERY_VOLTAGE: (0.0, 2_000.0),
    dd.BATTERY_TEMP: (-60.0, 100.0),
    dd.BATTERY_CYCLES: (0.0, 1_000_000.0),
    dd.BATTERY_HEALTH: (0.0, 100.0),
    dd.LOAD_TOTAL: _LOAD_KW,
    **{column: _LOAD_KW for column in dd.LOAD_COMPONENTS},
    dd.PRICE: (-100.0, 100.0),
    dd.FEED_IN: (-100.0, 100.0),
    dd.DEMAND_CHARGE: (0.0, 10_000.0),
    dd.CARBON: (0.0, 3_000.0),
    dd.NET_GRID_FLOW: (-20_000.0, 20_000.0),
}


def validate(frame: pd.DataFrame, required: Iterable[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """Split a flat frame into ``(good, bad, reasons)``; ``reasons`` is aligned with ``bad``.

    ``required`` names the fields that must hold a value (every field for simulated
    readings; only the columns an imported file has). Fields not required may be empty,
    but a value that is present must be in range.
    """
    required = set(dd.FIELD_TYPES if required is None else required)
    problems: list[tuple[str, np.ndarray]] = [
        (f"{dd.DEVICE_ID} is empty", (frame[dd.DEVICE_ID].isna() | (frame[dd.DEVICE_ID].astype(str) == "")).to_numpy()),
        (f"{dd.TS} is missing", frame[dd.TS].isna().to_numpy()),
    ]
    for column in dd.NUMERIC_COLUMNS:
        values = frame[column].to_numpy(dtype="float64", na_value=np.nan)
        missing = np.isnan(values)
        if column in required:
            problems.append((f"{column} is missing (NaN) but required", missing))
        low, high = RANGES[column]
        with np.errstate(invalid="ignore"):
            outside = ~missing & ~((values >= low) & (values <= high))
        problems.append((f"{column} outside [{low:g}, {high:g}]", outside))
    tou = frame[dd.TOU_PERIOD]
    tou_missing = tou.isna().to_numpy()
    if dd.TOU_PERIOD in required:
        problems.append((f"{dd.TOU_PERIOD} is missing but required", tou_missing))
    problems.append(
        (f"{dd.TOU_PERIOD} not one of {list(dd.TOU_PERIODS)}", ~tou_missing & ~tou.isin(dd.TOU_PERIODS).to_numpy())
    )
    bad_mask = np.zeros(len(frame), dtype=bool)
    for _, mask in problems:
        bad_mask |= mask
    if not bad_mask.any():
        return frame, frame.iloc[0:0], pd.Series([], dtype=str)
    reasons = _reasons(frame, problems, np.flatnonzero(bad_mask))
    return frame[~bad_mask].reset_index(drop=True), frame[bad_mask].reset_index(drop=True), reasons


def _reasons(frame: pd.DataFrame, problems: list[tuple[str, np.ndarray]], rows: np.ndarray) -> pd.Series:
    """One line per bad row naming every problem and the offending value; ``rows`` and the
    masks are positions, whatever the frame's index."""
    texts = []
    for row in rows:
        parts = []
        for label, mask in problems:
            if mask[row]:
                column = label.split(" ", 1)[0]
                shows_value = column in frame.columns and ("outside" in label or "not one of" in label)
                value = frame[column].iloc[row] if shows_value else None
                parts.append(f"{label} (got {_plain(value)!r})" if value is not None else label)
        texts.append("; ".join(parts))
    return pd.Series(texts, dtype=str)


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value
