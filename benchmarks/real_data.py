"""Real measured series that ship inside packages on PyPI, read from the installed package
(never downloaded at run time), as UTC power in kW ready for the forecasting code.

PV: NREL's PVDAQ system 50 (the SERF East fixed-tilt array on NREL's campus, Golden,
Colorado), AC power every 15 minutes from 2011-04-15 to 2013-12-31, with NSRDB PSM3 weather
for the same place, both shipped by ``pvanalytics`` (MIT) as example data.

Load: the "Individual household electric power consumption" measurements of one house in
Sceaux, France (Hébrail and Bérard, EDF R&D, UCI Machine Learning Repository, CC BY 4.0),
whole-house active power every minute from 2006-12-16 to 2010-11-26, shipped by
``EnergyData`` (no licence stated by the package; the data set's own licence applies).

Both files need their clock repaired before use, and each loader states how: a clock error
left in place would shift every forecast against the sun or the household's routine.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from der_core import der_data as dd

STEP = pd.Timedelta(minutes=15)


@dataclass(frozen=True)
class Source:
    """Where a real series comes from, for the figures a benchmark prints."""

    package: str
    file: str
    origin: str
    licence: str

    @property
    def version(self) -> str:
        return importlib.metadata.version(self.package)

    def path(self) -> Path:
        """The file inside the installed package, found without importing the package."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"package {self.package} is not installed: pip install -e '.[dev]'")
        return Path(next(iter(spec.submodule_search_locations))) / self.file

    def describe(self) -> str:
        return f"{self.origin}; file {self.file} of {self.package} {self.version} ({self.licence})"


PV_SOURCE = Source(
    "pvanalytics", "data/system_50_ac_power_2_full_DST.parquet",
    "NREL PVDAQ system 50 (SERF East, Golden CO, fixed tilt 45 deg, azimuth 158 deg): AC power, 15 min, "
    "2011-04-15 to 2013-12-31", "MIT",
)
TRACKER_SOURCE = Source(
    "pvanalytics", "data/nrel_1axis_tracker_mesa_ac_power.csv",
    "NREL's Mesa single-axis tracker (NREL campus, Golden CO): AC power in kW, 15 min, 2010-06-25 to 2010-06-30",
    "MIT",
)
PV_WEATHER_SOURCE = Source(
    "pvanalytics", "data/system_50_ac_power_2_full_DST_psm3.parquet",
    "NSRDB PSM3 satellite-derived weather at PVDAQ system 50: GHI, clear-sky GHI, air temperature, 30 min, "
    "2011 to 2013", "MIT",
)
LOAD_SOURCE = Source(
    "EnergyData", "data/householdpower.csv",
    "UCI 'Individual household electric power consumption' (Hebrail and Berard, EDF R&D; one house in "
    "Sceaux, France): whole-house active power, 1 min, 2006-12-16 to 2010-11-26", "data set CC BY 4.0",
)

#: The SERF East array as its publisher describes it; the source states no nameplate, so
#: the capacity is the largest measured AC output (see :func:`pv_site`).
PV_LOCATION = {"latitude": 39.7406, "longitude": -105.1775, "altitude_m": 1800.0, "timezone": "America/Denver",
               "country": "US", "tilt_degrees": 45.0, "azimuth_degrees": 158.0}
LOAD_LOCATION = {"latitude": 48.7786, "longitude": 2.2906, "timezone": "Europe/Paris", "country": "FR"}


def _wall_clock_to_utc(naive: pd.DatetimeIndex, timezone: str) -> pd.DatetimeIndex:
    """Local wall-clock labels to UTC. The hour a DST change makes ambiguous (it appears once
    in these files, standing for two) or nonexistent becomes NaT: which instant it is cannot
    be told, and both fall at night."""
    return naive.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT").tz_convert("UTC")


def pv_series() -> pd.Series:
    """Measured AC power of PVDAQ system 50 in kW, 15-minute means labelled at their end, UTC.

    The file labels every reading with a fixed UTC-07:00 offset, but its clock is Denver's
    wall clock: the measured output's midday moves an hour later than the sun's on the days
    US daylight saving starts and back on the days it ends. So the labels are read as local
    time in America/Denver. The source gives watts; negative night values are the inverter's
    own standby draw, not generation, and read as 0."""
    frame = pd.read_parquet(PV_SOURCE.path())
    wall = pd.DatetimeIndex(frame["measured_on"]).tz_localize(None)
    index = _wall_clock_to_utc(wall, PV_LOCATION["timezone"])
    kw = pd.Series(frame["ac_power_2"].to_numpy(dtype="float64") / 1000.0, index=index, name=dd.SOLAR_KW)
    kw = kw[kw.index.notna()].clip(lower=0.0)
    return kw


def pv_site(series: pd.Series | None = None) -> dict[str, Any]:
    """The ``sites`` row of PVDAQ system 50: the publisher's location and orientation, and,
    since no nameplate is published with the data, the largest measured AC output as both the
    PV and inverter rating (clear-sky output scales with it; ratios to it do not)."""
    series = pv_series() if series is None else series
    peak = float(np.ceil(series.max() * 10.0) / 10.0)
    return {dd.DEVICE_ID: "pvdaq-50", **PV_LOCATION, "pv_capacity_kw": peak, "inverter_kw": peak,
            "battery_capacity_kwh": 0.0, "has_ev": False}


def pv_weather() -> pd.DataFrame:
    """NSRDB PSM3 weather at PVDAQ system 50, UTC (the file's labels carry a true fixed offset):
    ``ghi``, ``ghi_clear`` (W/m2) and ``temp_air`` (deg C), every 30 minutes."""
    frame = pd.read_parquet(PV_WEATHER_SOURCE.path())
    index = pd.DatetimeIndex(frame["index"]).tz_convert("UTC")
    return pd.DataFrame({c: frame[c].to_numpy(dtype="float64") for c in ("ghi", "ghi_clear", "temp_air")},
                        index=index)


def load_series(step: pd.Timedelta = STEP) -> pd.Series:
    """Whole-house active power of the Sceaux household in kW, averaged to ``step`` (labelled
    at the interval's end, as the project's readings are), UTC.

    The package fills each minute the original data set leaves missing (about 1.25 %) with
    the reading of the same minute a day earlier, every column alike; a genuine reading never
    repeats all seven measured quantities (voltage to 0.01 V among them) a day apart, so such
    minutes are taken as missing again: left in, they would hand "same time yesterday" a
    perfect score. The labels are Paris wall-clock time (the morning rise stays at the same
    local hour across the DST changes)."""
    frame = pd.read_csv(LOAD_SOURCE.path(), engine="pyarrow")
    frame = frame.set_index(pd.DatetimeIndex(frame.pop("date_time")))
    measured = frame.columns
    earlier = frame.shift(freq=pd.Timedelta(days=1)).reindex(frame.index)
    copied = (frame[measured] == earlier[measured]).all(axis=1).to_numpy()
    kw = pd.Series(np.where(copied, np.nan, frame["Global_active_power"].to_numpy(dtype="float64")),
                   index=_wall_clock_to_utc(frame.index, LOAD_LOCATION["timezone"]))
    kw = kw[kw.index.notna()]
    # A minute labelled t covers (t - 1 min, t]; each step's mean over the minutes it holds.
    out = kw.resample(step, closed="right", label="right").mean()
    return out.rename(dd.LOAD_TOTAL)


def load_site() -> dict[str, Any]:
    """The ``sites`` row of the Sceaux household: no PV, no battery, no EV."""
    return {dd.DEVICE_ID: "uci-sceaux", **LOAD_LOCATION, "pv_capacity_kw": 0.0, "battery_capacity_kwh": 0.0,
            "has_ev": False}


def readings(device_id: str, series: pd.Series) -> pd.DataFrame:
    """Flat readings (the data contract's columns the resampler reads) carrying one measured
    column; every other quantity is unknown (NaN)."""
    series = series.dropna()
    out = pd.DataFrame({dd.DEVICE_ID: device_id, dd.TS: series.index}, index=range(len(series)))
    for column in (*dd.NUMERIC_COLUMNS, dd.NET_GRID_FLOW):
        if column not in out.columns:
            out[column] = np.nan
    for column in dd.TEXT_COLUMNS:
        out[column] = None
    out[series.name] = series.to_numpy()
    return out
