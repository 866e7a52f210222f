"""The feature set: every feature of one site's grid, as a pure function of the grid and the
site's description. Bump :data:`FEATURE_SET_VERSION` whenever a feature is added, removed or
computed differently; stored rows carry the version (with the settings that shape them), so
old and new feature sets never mix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from cloud.feature_engineering import resample as rs
from cloud.feature_engineering.calendar import CALENDAR_FEATURES, calendar_features
from cloud.feature_engineering.history import (
    LAGS,
    ROLLING_STATS,
    lag_features,
    lag_name,
    rolling_features,
    rolling_name,
)
from cloud.feature_engineering.market import MARKET_FEATURES, market_features
from cloud.feature_engineering.physics import (
    PHYSICS_FEATURES,
    physics_features,
    solar_config,
)
from der_core import der_data as dd

FEATURE_SET_VERSION = 2

# Targets: what forecasters predict, the step's mean at the grid instant.
LOAD_KW, SOLAR_KW, PRICE_PER_KWH = "load_kw", "solar_kw", "price_per_kwh"
TARGETS: dict[str, str] = {LOAD_KW: dd.LOAD_TOTAL, SOLAR_KW: dd.SOLAR_KW, PRICE_PER_KWH: dd.PRICE}

#: Observations of the step ending at the instant (like the targets, known only at the instant).
STATE_FEATURES: tuple[str, ...] = (
    dd.BATTERY_SOC, dd.BATTERY_POWER, dd.NET_GRID_FLOW, dd.LOAD_EV, *rs.ENERGY_COLUMNS, rs.READINGS_IN_STEP, rs.FILLED,
)


def version_label(step: pd.Timedelta, window_days: int, max_gap: pd.Timedelta) -> str:
    """The stored ``version``: the feature set plus the settings that change its values."""
    return f"fe{FEATURE_SET_VERSION}-step{_minutes(step)}m-roll{window_days}d-gap{_minutes(max_gap)}m"


def _minutes(delta: pd.Timedelta) -> str:
    return f"{delta.total_seconds() / 60:g}"


def rolling_min_periods(step: pd.Timedelta) -> int:
    """Half a day of observed steps: a statistic from less is mostly noise."""
    return max(1, int(pd.Timedelta(hours=12) // step))


def build_features(
    grid: pd.DataFrame, site: Mapping[str, Any], step: pd.Timedelta, window_days: int
) -> pd.DataFrame:
    """Every feature at every instant of ``grid`` (from :func:`resample.resample_site`).
    The value at ``T`` depends only on ``grid`` at or before ``T``."""
    index = grid.index
    targets = {name: grid[column].astype("float64") for name, column in TARGETS.items()}
    parts = [
        pd.DataFrame(targets, index=index),
        grid[list(STATE_FEATURES)].astype("float64"),
        calendar_features(index, site.get("timezone") or "UTC", site.get("country")),
        lag_features(targets, step),
        rolling_features(targets, step, window_days, rolling_min_periods(step)),
        physics_features(index, targets[SOLAR_KW], grid[dd.SOLAR_IRRADIANCE], grid[dd.PANEL_TEMP], solar_config(site)),
        market_features(grid[dd.PRICE], grid[dd.FEED_IN], grid[dd.CARBON], grid[dd.TOU_PERIOD]),
    ]
    return pd.concat(parts, axis=1)


def feature_names(window_days: int) -> tuple[str, ...]:
    """The columns :func:`build_features` returns, in order."""
    lags = tuple(lag_name(t, lag) for t in TARGETS for lag in LAGS)
    rolls = tuple(rolling_name(t, stat, window_days) for t in TARGETS for stat in ROLLING_STATS)
    return (*TARGETS, *STATE_FEATURES, *CALENDAR_FEATURES, *lags, *rolls, *PHYSICS_FEATURES, *MARKET_FEATURES)
