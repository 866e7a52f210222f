"""Weather and physics proxies: measured irradiance and panel temperature, the output a clear
sky would give at the instant (the simulator's own PV chain, never a second copy of it) and
the ratio of actual to clear-sky output."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from der_core.config import SolarConfig
from der_core.errors import ConfigError
from der_physics.base import TimeAxis
from der_physics.solar import Astronomy, simulate

IRRADIANCE, PANEL_TEMP = "irradiance_w_m2", "panel_temp_celsius"
CLEARSKY_KW, CLEARSKY_RATIO = "clearsky_kw", "clearsky_ratio"
PHYSICS_FEATURES: tuple[str, ...] = (IRRADIANCE, PANEL_TEMP, CLEARSKY_KW, CLEARSKY_RATIO)

# Site-row fields -> SolarConfig fields; a missing field keeps the SolarConfig default.
_SOLAR_FIELDS = {
    "pv_capacity_kw": "capacity_kw",
    "latitude": "latitude",
    "longitude": "longitude",
    "altitude_m": "altitude_m",
    "tilt_degrees": "tilt_degrees",
    "azimuth_degrees": "azimuth_degrees",
    "inverter_kw": "inverter_kw",
}
#: Below this share of the PV rating the sun is effectively down and the ratio is 0, not a
#: division by (almost) zero at dawn and dusk.
NIGHT_SHARE = 0.01
MAX_RATIO = 2.0  # cloud-edge enhancement stays well below this; larger values are noise
#: What ``der_physics.solar.clearsky_ac_kw`` assumes: a clear sky, 20 °C air and
#: 1 m/s wind (tests pin the two to the same bits).
CLEAR_SKY_INDEX, CLEAR_AIR_CELSIUS, CLEAR_WIND_M_S = 1.0, 20.0, 1.0


def solar_config(site: Mapping[str, Any]) -> SolarConfig:
    """The PV system a cloud ``sites`` row describes."""
    values = {ours: site[theirs] for theirs, ours in _SOLAR_FIELDS.items()
              if site.get(theirs) is not None and site.get(theirs) == site.get(theirs)}
    try:
        return SolarConfig(**values)
    except ValidationError as error:
        first = error.errors()[0]
        raise ConfigError(f"site {site.get('device_id')}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def physics_features(
    index: pd.DatetimeIndex, solar_kw: pd.Series, irradiance: pd.Series, panel_temp: pd.Series, config: SolarConfig
) -> pd.DataFrame:
    clear = clearsky_kw(config, index)
    night = clear < NIGHT_SHARE * max(config.inverter_limit_kw, 1e-9)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(night, 0.0, np.clip(solar_kw.to_numpy() / clear, 0.0, MAX_RATIO))
    ratio = np.where(np.isnan(solar_kw.to_numpy()), np.nan, ratio)
    return pd.DataFrame({
        IRRADIANCE: irradiance.to_numpy(dtype="float64"),
        PANEL_TEMP: panel_temp.to_numpy(dtype="float64"),
        CLEARSKY_KW: clear,
        CLEARSKY_RATIO: ratio,
    }, index=index)


def clearsky_kw(config: SolarConfig, index: pd.DatetimeIndex) -> np.ndarray:
    """AC output under a clear sky at each instant: the simulator's PV chain, as
    ``clearsky_ac_kw`` runs it, but with the time-only astronomy shared by every site on the
    same grid. pvlib's hour angle walks the timestamps one by one, which cost more than the
    rest of the physics for a fleet rebuild."""
    axis, astro = _time_only(index.asi8.tobytes(), str(index.dtype))
    steps = len(axis)
    return simulate(config, axis, np.full(steps, CLEAR_SKY_INDEX), np.full(steps, CLEAR_AIR_CELSIUS),
                    np.full(steps, CLEAR_WIND_M_S), astro=astro).generation_kw


@lru_cache(maxsize=4)
def _time_only(stamps: bytes, dtype: str) -> tuple[TimeAxis, Astronomy]:
    """The time axis and astronomy of one distinct grid (keyed by its raw int64 stamps), so
    they are computed once per run, not once per site."""
    naive = dtype.split(",")[0].rstrip("]") + "]"  # datetime64[us, UTC] -> datetime64[us]
    axis = TimeAxis.from_times(pd.DatetimeIndex(np.frombuffer(stamps, dtype="int64").view(naive), tz="UTC"))
    return axis, Astronomy.of(axis)
