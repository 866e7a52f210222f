"""Row validation before readings reach the cloud: a missing number where one is required, or
a value outside its physical range (``der_data.PLAUSIBLE``), sends the row to quarantine with
the reason; the other rows go on, a PV inverter's night draw and a pyranometer's night offset
read as 0. Pure functions over a flat frame."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from der_core import der_data as dd


def validate(frame: pd.DataFrame, required: Iterable[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """Split a flat frame into ``(good, bad, reasons)``; ``reasons`` is aligned with ``bad``.

    ``required`` names the fields that must hold a value (every field for simulated
    readings; only the columns an imported file has). Fields not required may be empty,
    but a value that is present must be in range. PV or irradiance a little below 0 (at most
    ``dd.NIGHT_OFFSET``) is the inverter's own draw or the pyranometer's offset at night, and
    ``good`` holds it as 0: the row's other values are sound, and a value below 0 would
    mislead every job that learns from it.
    """
    required = set(dd.FIELD_TYPES if required is None else required)
    empty = (frame[dd.DEVICE_ID].isna() | (frame[dd.DEVICE_ID].astype(str) == "")).to_numpy()
    problems: list[tuple[str, np.ndarray]] = [
        (f"{dd.DEVICE_ID} is empty", empty),
        (f"{dd.DEVICE_ID} is not valid", ~empty & _invalid_ids(frame[dd.DEVICE_ID])),
        (f"{dd.TS} is missing", frame[dd.TS].isna().to_numpy()),
    ]
    for column in dd.NUMERIC_COLUMNS:
        values = frame[column].to_numpy(dtype="float64", na_value=np.nan)
        missing = np.isnan(values)
        if column in required:
            problems.append((f"{column} is missing (NaN) but required", missing))
        low, high = dd.PLAUSIBLE[column]
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
        return _no_night_offset(frame), frame.iloc[0:0], pd.Series([], dtype=str)
    reasons = _reasons(frame, problems, np.flatnonzero(bad_mask))
    return _no_night_offset(frame[~bad_mask].reset_index(drop=True)), frame[bad_mask].reset_index(drop=True), reasons


def _invalid_ids(ids: pd.Series) -> np.ndarray:
    """The rows whose device id breaks the rule every flag and configuration is held to
    (``der_data.device_id_problem``): an edge store written by other means (a NUL byte, which
    PostgreSQL's text refuses) would otherwise fail the whole batch, every device's with it,
    on every run. Checked once per distinct id."""
    bad = [v for v in pd.unique(ids.dropna()) if dd.device_id_problem(v) is not None]
    return ids.isin(bad).to_numpy(dtype=bool) if bad else np.zeros(len(ids), dtype=bool)


def _no_night_offset(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (in range) with each value below 0 of a :data:`dd.NIGHT_OFFSET` field as 0;
    a frame without one is returned as it is."""
    copied = False
    for column in dd.NIGHT_OFFSET:
        below = (frame[column] < 0).fillna(False).to_numpy(dtype=bool)
        if below.any():
            frame = frame if copied else frame.copy()
            frame[column], copied = frame[column].mask(below, 0.0), True
    return frame


def _reasons(frame: pd.DataFrame, problems: list[tuple[str, np.ndarray]], rows: np.ndarray) -> pd.Series:
    """One line per bad row naming every problem and the offending value; ``rows`` and the
    masks are positions, whatever the frame's index."""
    texts = []
    for row in rows:
        parts = []
        for label, mask in problems:
            if mask[row]:
                column = label.split(" ", 1)[0]
                shows_value = column in frame.columns and ("outside" in label or "not one of" in label
                                                           or "not valid" in label)
                value = frame[column].iloc[row] if shows_value else None
                parts.append(f"{label} (got {_plain(value)!r})" if value is not None else label)
        texts.append("; ".join(parts))
    return pd.Series(texts, dtype=str)


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value
