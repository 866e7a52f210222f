"""What the forecasters predict, and which of it a site's data can support.

Imported meters often carry only part of a reading (PV power and weather, or only load), so
every target is checked per site before training: a target is trained on the sites that have
enough of it, and a target no site supports is reported with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cloud.feature_engineering.physics import solar_config
from cloud.feature_engineering.pipeline import LOAD_KW, PRICE_PER_KWH, SOLAR_KW, TARGETS
from cloud.forecasting import clear_sky_index as csi
from cloud.site_steps import filled_columns, no_load_reason
from der_physics.solar import clearsky_ac_kw

#: Target name -> the reading column it forecasts (the feature set's own mapping).
TARGET_COLUMNS: dict[str, str] = dict(TARGETS)
NON_NEGATIVE: frozenset[str] = frozenset({LOAD_KW, SOLAR_KW})
SOLAR_COLUMN = TARGET_COLUMNS[SOLAR_KW]
__all__ = ["LOAD_KW", "SOLAR_KW", "PRICE_PER_KWH", "TARGET_COLUMNS", "NON_NEGATIVE", "Availability", "availability"]


@dataclass(frozen=True)
class Availability:
    target: str
    device_id: str
    days: float  # observed days of the target (of PV: days' worth of its sun-up steps)
    reason: str | None  # why the site cannot train this target, or None

    @property
    def ok(self) -> bool:
        return self.reason is None


def availability(target: str, device_id: str, grid: pd.DataFrame, site: Mapping[str, Any],
                 step: pd.Timedelta, min_days: float) -> Availability:
    """Whether ``grid`` (one site's resampled readings) has enough of ``target``. PV's days
    count its sun-up steps only: with the sun down the grid holds 0 wherever another meter
    was read, so a site whose PV was logged on its last few days would otherwise pass for
    weeks of PV."""
    column = TARGET_COLUMNS[target]
    values = grid[column].to_numpy(dtype="float64") if column in grid.columns else np.array([])
    observed = int(np.isfinite(values).sum())
    days = observed * step / pd.Timedelta(days=1)
    if observed == 0:
        why = (f"no house load: {no_load_reason(filled_columns(grid), site)}" if target == LOAD_KW
               else f"no {column} readings")
        return Availability(target, device_id, 0.0, why)
    if target == SOLAR_KW:
        why = no_pv_reason(float(site.get("pv_capacity_kw") or 0.0), float(np.nanmax(values)))
        if why is not None:
            return Availability(target, device_id, days, why)
        up = sun_up_at(site, grid.index)
        days = np.isfinite(values[up]).sum() / max(int(up.sum()), 1) * len(grid) * step / pd.Timedelta(days=1)
    if days < min_days:
        what = f"{column} by daylight" if target == SOLAR_KW else column
        return Availability(target, device_id, days,
                            f"only {days_held(days)} days of {what}; at least {min_days:g} are needed")
    return Availability(target, device_id, days, None)


def days_held(days: float) -> str:
    """``days`` to one decimal, rounded down: 13.99 days shown as "14.0" would contradict the
    14 asked for."""
    return f"{math.floor(days * 10) / 10:.1f}"


def sun_up_at(site: Mapping[str, Any], index: pd.DatetimeIndex) -> np.ndarray:
    """Where the declared array's clear-sky output says the sun is up (:func:`csi.sun_up`)."""
    config = solar_config(site)
    return csi.sun_up(clearsky_ac_kw(config, index), config.inverter_limit_kw)


def no_pv_reason(capacity_kw: float, highest_kw: float) -> str | None:
    """Why PV cannot be trained with this declared capacity and highest measured output, or
    None. A site that measures PV but declares none is told to declare it: its clear-sky
    output, and so every PV feature, comes from the declaration."""
    if capacity_kw > 0 and highest_kw > 0:
        return None
    if highest_kw > 0:
        return (f"{SOLAR_COLUMN} reaches {highest_kw:.2f} kW but no PV system is declared (pv_capacity_kw is 0): "
                "declare the array (the site file's pv) to forecast it")
    return "no PV system (pv_capacity_kw is 0 or PV output never above 0)"
