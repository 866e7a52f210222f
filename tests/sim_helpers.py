"""Small helpers for tests that need simulated readings."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cloud.optimization import forecasters as fc
from der_core.config import SimulatorConfig, build_config
from der_physics import generator


def config(**overrides) -> SimulatorConfig:
    return build_config(overrides)


def readings(configs, start: str, end: str) -> pd.DataFrame:
    configs = list(configs) if isinstance(configs, (list, tuple)) else [configs]
    frames = list(generator.historical(configs, pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC")))
    return pd.concat(frames, ignore_index=True)


def bursty_home(days: int, seed: int = 5, start: str = "2024-05-01") -> pd.DataFrame:
    """A household without a car, per 15-minute reading (UTC, :data:`forecasters.COLUMNS`'
    load and PV): 0.6 kW, a little PV around noon, and every evening a burst of 5.5 kW for an
    hour to an hour and a half starting between 18:00 and 21:00 local time (America/Denver):
    an oven or a wash, routine, but at no hour a forecast can pin down."""
    rng = np.random.default_rng(seed)
    local = pd.date_range(start, periods=days * 96 + 1, freq="15min", tz="America/Denver")[1:]
    load = np.full(len(local), 0.6)
    for day in range(days):
        first = day * 96 + 72 + int(rng.integers(0, 13))
        load[first : first + int(rng.integers(4, 7))] += 5.5
    hours = np.asarray(local.hour + local.minute / 60.0)
    pv = np.where(np.abs(hours - 12.5) < 6.0, 2.0 * np.cos((hours - 12.5) / 12.0 * np.pi), 0.0)
    return pd.DataFrame({fc.LOAD: load, fc.PV: np.clip(pv, 0.0, None)}, index=local.tz_convert("UTC"))
