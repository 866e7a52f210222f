"""Rooftop PV: sun position, clear-sky and all-sky irradiance, cell temperature, DC power
with the temperature coefficient, inverter efficiency and clipping.

The model chain uses pvlib throughout: Spencer's declination and equation of time with the
analytical zenith/azimuth (fast, and within a fraction of a degree of SPA, which is far
below the cloud noise), Ineichen clear sky, Erbs decomposition, isotropic transposition,
the Faiman cell temperature model and the PVWatts inverter.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from pvlib import atmosphere, clearsky, inverter, irradiance, solarposition, temperature, tracking

from der_core.config import SolarConfig
from der_physics.base import TimeAxis

LINKE_TURBIDITY = 3.0  # the simulator's sky: a typical mid-latitude, moderately clear value
INVERTER_NOMINAL_EFFICIENCY = 0.96
#: The weather a clear-sky output assumes where no forecast gives its own: 20 °C air, 1 m/s wind.
CLEAR_AIR_CELSIUS, CLEAR_WIND_M_S = 20.0, 1.0


@dataclass(frozen=True)
class SunPosition:
    zenith_deg: np.ndarray
    azimuth_deg: np.ndarray


@dataclass(frozen=True)
class SolarOutput:
    generation_kw: np.ndarray  # AC
    poa_irradiance_w_m2: np.ndarray
    ghi_w_m2: np.ndarray
    clear_sky_ghi_w_m2: np.ndarray
    cell_temp_celsius: np.ndarray
    efficiency_percent: np.ndarray


@dataclass(frozen=True)
class Astronomy:
    """What depends on time only, computed once per time axis and shared by every site."""

    greenwich_hour_angle_deg: np.ndarray  # add a site's longitude for its own hour angle
    declination_rad: np.ndarray
    dni_extra_w_m2: np.ndarray

    @classmethod
    def of(cls, axis: TimeAxis) -> Astronomy:
        eot = solarposition.equation_of_time_spencer71(axis.day_of_year)
        return cls(
            greenwich_hour_angle_deg(axis.times, eot),
            np.asarray(solarposition.declination_spencer71(axis.day_of_year), dtype=float),
            np.asarray(irradiance.get_extra_radiation(axis.day_of_year), dtype=float),
        )


def greenwich_hour_angle_deg(times_utc: pd.DatetimeIndex, equation_of_time_min: np.ndarray) -> np.ndarray:
    """``pvlib.solarposition.hour_angle(times_utc, 0.0, equation_of_time_min)``, vectorised.

    pvlib looks up each instant's UTC offset in a Python loop, about half a second per
    site-year; for UTC instants the offset is zero and what remains is its formula, which
    this evaluates with the same operations (a test holds the two equal bit for bit).
    """
    hours = np.asarray((times_utc - times_utc.normalize()) / pd.Timedelta("1h"), dtype=float)
    return 15.0 * (hours - 12.0) + equation_of_time_min / 4.0


def sun_position(axis: TimeAxis, latitude: float, longitude: float, astro: Astronomy | None = None) -> SunPosition:
    """Zenith everywhere; azimuth (only needed with the sun up) by day, NaN at night."""
    astro = Astronomy.of(axis) if astro is None else astro
    hour_angle = np.radians(astro.greenwich_hour_angle_deg + longitude)
    declination = astro.declination_rad
    lat = np.radians(latitude)
    zenith = solarposition.solar_zenith_analytical(lat, hour_angle, declination)
    day = zenith < np.pi / 2
    azimuth = np.full(zenith.shape, np.nan)
    azimuth[day] = solarposition.solar_azimuth_analytical(lat, hour_angle[day], declination[day], zenith[day])
    return SunPosition(np.degrees(zenith), np.degrees(azimuth))


def clear_sky(sun: SunPosition, altitude_m: float, dni_extra: np.ndarray,
              linke_turbidity: float | np.ndarray = LINKE_TURBIDITY) -> dict[str, np.ndarray]:
    """Ineichen clear-sky GHI, DNI and DHI (W/m2) under ``linke_turbidity`` (one value, or one
    per instant)."""
    airmass = atmosphere.get_absolute_airmass(
        atmosphere.get_relative_airmass(sun.zenith_deg), atmosphere.alt2pres(altitude_m)
    )
    with np.errstate(divide="ignore", invalid="ignore"):  # night: airmass is NaN, output set to 0 below
        sky = clearsky.ineichen(sun.zenith_deg, airmass, linke_turbidity, altitude=altitude_m, dni_extra=dni_extra)
    return {k: np.nan_to_num(np.asarray(sky[k], dtype=float)) for k in ("ghi", "dni", "dhi")}


def climatological_linke_turbidity(times: pd.DatetimeIndex, latitude: float, longitude: float) -> np.ndarray:
    """Linke turbidity at each instant from the monthly climatology pvlib ships (Remund et al.),
    interpolated by day of year: a measured site's clear sky is as hazy as its place and
    season, which a single value misses by several percent of clear-sky output.

    pvlib's value depends on the instant's UTC day of year and whether its year is a leap
    year only, so it is looked up once per place for every day of both kinds of year
    (:func:`_turbidity_by_day`) and read from there: the lookup opens pvlib's HDF5 file each
    time, which a plan's every clear sky paid."""
    utc = pd.DatetimeIndex(times)
    utc = utc.tz_localize("UTC") if utc.tz is None else utc.tz_convert("UTC")  # pvlib reads a naive time as UTC
    leap, common = _turbidity_by_day(float(latitude), float(longitude))
    day = np.asarray(utc.day_of_year) - 1
    return np.where(np.asarray(utc.is_leap_year), leap[day], common[np.minimum(day, 364)])


@lru_cache(maxsize=64)
def _turbidity_by_day(latitude: float, longitude: float) -> tuple[np.ndarray, np.ndarray]:
    """pvlib's climatological Linke turbidity at a place on every day of a leap year and of a
    common one, as pvlib itself gives them."""
    days = []
    for year, count in ((2016, 366), (2015, 365)):
        with warnings.catch_warnings():  # pvlib's lookup reads DatetimeIndex.dayofyear, which pandas 3 deprecates
            warnings.filterwarnings("ignore", message=".*dayofyear is deprecated")
            index = pd.date_range(f"{year}-01-01T12:00Z", periods=count, freq="D")
            days.append(np.asarray(clearsky.lookup_linke_turbidity(index, latitude, longitude), dtype=float))
            days[-1].setflags(write=False)  # shared by every caller at this place
    return days[0], days[1]


def panel_orientation(config: SolarConfig, sun: SunPosition) -> tuple[float | np.ndarray, float | np.ndarray]:
    """The panels' tilt and azimuth while the sun is up: the declared plane, or a single-axis
    tracker's at each instant (``pvlib.tracking.singleaxis``, turned toward the sun within
    its rotation limit, backtracking if it does). Tilt and azimuth then name the axis."""
    if config.tracking == "fixed":
        return config.tilt_degrees, config.azimuth_degrees
    angles = tracking.singleaxis(sun.zenith_deg, sun.azimuth_deg, axis_tilt=config.tilt_degrees,
                                 axis_azimuth=config.azimuth_degrees, max_angle=config.max_angle_degrees,
                                 backtrack=config.backtrack, gcr=config.ground_coverage_ratio)
    # pvlib leaves a tracker's angles undefined with the sun at the horizon: it lies flat there
    return (np.nan_to_num(np.asarray(angles["surface_tilt"], dtype=float)),
            np.nan_to_num(np.asarray(angles["surface_azimuth"], dtype=float), nan=config.azimuth_degrees))


def plane_of_array(day_of_year: np.ndarray, sun: SunPosition, ghi: np.ndarray, tilt: float | np.ndarray,
                   azimuth: float | np.ndarray) -> np.ndarray:
    """Erbs split of GHI into beam and diffuse, then isotropic transposition onto the panels."""
    split = irradiance.erbs(ghi, sun.zenith_deg, day_of_year)
    poa = irradiance.get_total_irradiance(
        tilt, azimuth, sun.zenith_deg, sun.azimuth_deg, np.asarray(split["dni"]), ghi, np.asarray(split["dhi"])
    )
    return np.clip(np.nan_to_num(np.asarray(poa["poa_global"], dtype=float)), 0.0, None)


def pv_power(
    config: SolarConfig, poa_w_m2: np.ndarray, temp_air_celsius: np.ndarray, wind_speed_m_s: np.ndarray,
    lit: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AC power (kW), cell temperature and module efficiency (percent) from plane-of-array irradiance.

    ``lit`` (optional) marks the instants with any irradiance; elsewhere the cell sits at air
    temperature and the inverter delivers nothing, so the models run on the lit ones only.
    """
    lit = slice(None) if lit is None else lit
    cell_temp = np.array(temp_air_celsius, dtype=float)
    cell_temp[lit] = temperature.faiman(poa_w_m2[lit], temp_air_celsius[lit], wind_speed_m_s[lit])
    temp_factor = np.clip(1.0 + config.temp_coefficient * (cell_temp - 25.0), 0.0, None)
    ac_kw = np.zeros_like(cell_temp)
    pdc0_kw = config.inverter_limit_kw / INVERTER_NOMINAL_EFFICIENCY
    if pdc0_kw > 0:
        dc_kw = config.capacity_kw * poa_w_m2[lit] / 1000.0 * temp_factor[lit] * (1.0 - config.system_losses)
        with np.errstate(divide="ignore", invalid="ignore"):  # no DC power: NaN from the model, 0 below
            ac_kw[lit] = inverter.pvwatts(dc_kw, pdc0_kw, INVERTER_NOMINAL_EFFICIENCY)
    ac_kw = np.clip(np.nan_to_num(ac_kw), 0.0, config.inverter_limit_kw)  # clipping at the AC rating
    return ac_kw, cell_temp, 100.0 * config.panel_efficiency * temp_factor


def simulate(
    config: SolarConfig,
    axis: TimeAxis,
    clear_sky_index: np.ndarray,
    temp_air_celsius: np.ndarray,
    wind_speed_m_s: np.ndarray,
    astro: Astronomy | None = None,
    sun: SunPosition | None = None,
    linke_turbidity: float | np.ndarray = LINKE_TURBIDITY,
) -> SolarOutput:
    """PV output under the given sky: the clear-sky GHI (Ineichen, under ``linke_turbidity``:
    one value or one per instant) times the clear-sky index, through the panels and inverter."""
    astro = Astronomy.of(axis) if astro is None else astro
    sun = sun_position(axis, config.latitude, config.longitude, astro) if sun is None else sun
    # The irradiance chain runs on daytime instants only (about half): at night every
    # irradiance is zero, and the masked result is identical element by element.
    day = sun.zenith_deg < 90.0
    day_sun = SunPosition(sun.zenith_deg[day], sun.azimuth_deg[day])
    clear_ghi, ghi, poa = np.zeros(len(day)), np.zeros(len(day)), np.zeros(len(day))
    turbidity = linke_turbidity if np.ndim(linke_turbidity) == 0 else np.asarray(linke_turbidity)[day]
    clear_ghi[day] = clear_sky(day_sun, config.altitude_m, astro.dni_extra_w_m2[day], turbidity)["ghi"]
    ghi[day] = clear_ghi[day] * clear_sky_index[day]
    poa[day] = plane_of_array(axis.day_of_year[day], day_sun, ghi[day], *panel_orientation(config, day_sun))
    ac_kw, cell_temp, efficiency = pv_power(config, poa, temp_air_celsius, wind_speed_m_s, day)
    return SolarOutput(ac_kw, poa, ghi, clear_ghi, cell_temp, efficiency)


def clear_sky_output(config: SolarConfig, times: pd.DatetimeIndex, clear_sky_index: np.ndarray | float = 1.0,
                     temp_air_celsius: np.ndarray | float = CLEAR_AIR_CELSIUS) -> SolarOutput:
    """The system's output under its place's clear sky scaled by ``clear_sky_index`` (1: clear),
    at ``temp_air_celsius`` (20 °C unless a forecast says) and 1 m/s wind: the one clear sky
    that measured PV is divided by (its clear-sky index) and that forecasts of the index are
    multiplied back onto.

    The clear sky is Ineichen under the place's climatological Linke turbidity, not the
    simulator's single :data:`LINKE_TURBIDITY`: a real array sits in its place's haze, which
    one value misses by several percent of clear-sky output, by a different amount each
    season, so an index against it would carry a seasonal bias of the model, not of the sky.
    It stays fast for a fleet: the astronomy depends on the instants only and is computed once
    per distinct grid (:func:`_time_only`), and the turbidity is one table read per site.
    """
    axis, astro = _time_only(*_stamps(times))
    steps = len(axis)
    turbidity = climatological_linke_turbidity(axis.times, config.latitude, config.longitude)
    return simulate(config, axis, np.broadcast_to(clear_sky_index, steps).astype(float),
                    np.broadcast_to(temp_air_celsius, steps).astype(float), np.full(steps, CLEAR_WIND_M_S),
                    astro=astro, linke_turbidity=turbidity)


def clearsky_ac_kw(config: SolarConfig, times: pd.DatetimeIndex,
                   temp_air_celsius: float | np.ndarray = CLEAR_AIR_CELSIUS) -> np.ndarray:
    """AC output under the place's clear sky at each instant (:func:`clear_sky_output`)."""
    return clear_sky_output(config, times, 1.0, temp_air_celsius).generation_kw


def _stamps(times: pd.DatetimeIndex) -> tuple[bytes, str]:
    """The instants as a hashable key: their raw int64 stamps and their dtype."""
    index = pd.DatetimeIndex(times)
    return index.asi8.tobytes(), str(index.dtype)


@lru_cache(maxsize=4)
def _time_only(stamps: bytes, dtype: str) -> tuple[TimeAxis, Astronomy]:
    """The time axis and astronomy of one distinct grid (keyed by its raw int64 stamps), so a
    fleet computes them once per run, not once per site: they cost about as much as the rest
    of a site's clear sky."""
    naive = dtype.split(",")[0].rstrip("]") + "]"  # datetime64[us, UTC] -> datetime64[us]
    axis = TimeAxis.from_times(pd.DatetimeIndex(np.frombuffer(stamps, dtype="int64").view(naive), tz="UTC"))
    return axis, Astronomy.of(axis)
