"""Weather and physics proxies: measured irradiance and panel temperature, the output a clear
sky would give at the instant (``der_physics.solar.clearsky_ac_kw``, never a second copy of
it) and the ratio of actual to clear-sky output (the forecasting package's clear-sky index)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from cloud.forecasting import clear_sky_index as csi
from der_core.config import SolarConfig
from der_core.errors import ConfigError
from der_core.site_file import declared_site, planning_config
from der_physics.solar import clearsky_ac_kw

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


def solar_config(site: Mapping[str, Any]) -> SolarConfig:
    """The PV system a cloud ``sites`` row describes: a declared site's as its declaration
    says (a tracker's turning is in the declaration only), another's from the row's columns."""
    declared = declared_site(site)
    if declared is not None:
        return planning_config(declared).solar
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
    """The proxies at each grid instant. The clear-sky ratio is the clear-sky index
    (``csi.index_by_day``): 0 with the sun down, since a feature needs a value there, and NaN
    wherever the PV reading is missing, night or not."""
    clear = clearsky_ac_kw(config, index)
    pv_kw = solar_kw.to_numpy(dtype="float64")
    ratio = np.where(np.isnan(pv_kw), np.nan, csi.index_by_day(pv_kw, clear, csi.sun_up(clear, config.inverter_limit_kw)))
    return pd.DataFrame({
        IRRADIANCE: irradiance.to_numpy(dtype="float64"),
        PANEL_TEMP: panel_temp.to_numpy(dtype="float64"),
        CLEARSKY_KW: clear,
        CLEARSKY_RATIO: ratio,
    }, index=index)
