"""A site's readings as means over regular steps, completed with what the site's declaration
and physics say of what its meters did not measure.

Every job that reads a site's house load or PV (features, the forecasters' histories, plans,
backtests) reads them through here, so all see the same series:

- **PV is 0** where the site declares no PV (``pv_capacity_kw`` 0), and, in a series that
  measured its PV at all, where the sun gives the declared array nothing at both ends of the
  step: many inverters log nothing at night, and a missing night would otherwise hide the
  house load of every night behind it. Only nights the logger was alive in, though: another
  meter read the step, or the PV's silence lasts no longer than a night; the nights of days
  with no reading at all stay unknown.
- **The house load is the balance** where no load was measured: the contract's
  ``net_grid_flow = load + battery - solar`` solved for it (``der_data.house_load_kw``), the
  battery's power 0 where the site declares no battery. A home's data is most often its
  utility meter's flow and its inverter's PV, with no meter of its own load. The balance is
  taken step by step, after each meter's readings are averaged over the step, because the
  two meters seldom read at the same cadence (a 15-minute utility meter, a 5-minute
  inverter). A term missing leaves the load missing; a balance below zero says the meters
  disagree (clocks or scales) and gives none.

The store keeps what was measured: nothing completed here is written back.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
import pandas as pd

from cloud.feature_engineering import resample as rs
from cloud.feature_engineering.physics import solar_config
from cloud.sync.plausibility import interval_of
from der_core import der_data as dd
from der_physics.solar import clearsky_ac_kw

#: The longest run without a PV reading that is an inverter's silent night (at 60 degrees of
#: latitude the longest nights last 18 h); a longer one is a logger that was off.
LONGEST_DARK = pd.Timedelta(hours=20)
#: The reading columns the completion reads, averaged over each step.
STEP_COLUMNS: tuple[str, ...] = (dd.LOAD_TOTAL, dd.SOLAR_KW, dd.NET_GRID_FLOW, dd.BATTERY_POWER)
#: The meters the house load's balance is taken from.
BALANCE_TERMS: tuple[str, ...] = (dd.NET_GRID_FLOW, dd.SOLAR_KW, dd.BATTERY_POWER)


def declares_none(site: Mapping[str, Any], capacity: str) -> bool:
    """Whether a site row says the site has none of a device (``pv_capacity_kw``,
    ``battery_capacity_kwh`` 0): its power is then 0, not unknown (NaN or absent: not said)."""
    value = site.get(capacity)
    return value is not None and value == value and float(value) == 0.0


def step_origin(stamps: pd.DatetimeIndex, timezone: str | None) -> pd.Timestamp | str:
    """Where a site's steps are counted from: a local midnight (the first stamp's), so that
    the steps fall on the site's own hours. In a zone half or three quarters of an hour off
    UTC (India, Nepal, South Australia, Newfoundland, Chatham) an hourly meter reads on the
    local hour, which steps counted from UTC's midnight would cut in two. Elsewhere both
    counts give the same steps."""
    if not timezone or stamps.empty:
        return "start_day"
    return stamps[0].tz_convert(timezone).normalize().tz_convert("UTC")


def local_floor(ts: pd.Timestamp, step: pd.Timedelta, timezone: str) -> pd.Timestamp:
    """``ts`` floored to the site's steps (:func:`step_origin`): a plan asked for at local
    midnight in Kolkata with hourly steps starts there, not at 23:30 the day before."""
    origin = step_origin(pd.DatetimeIndex([ts]), timezone)
    return origin + ((ts - origin) // step) * step


def per_step(readings: pd.DataFrame, column: str, step: pd.Timedelta, timezone: str | None = None) -> pd.Series:
    """A reading column's mean over each step of the site's (:func:`step_origin`), labelled
    by the step's end: a reading describes the interval ending at its stamp, so a step takes
    the readings inside it, and a step inside a coarser meter's interval (a quarter hour of a
    half-hourly meter, the column's own most common spacing) takes the reading whose interval
    holds it. The readings must end at the instant the caller stands at: the last interval's
    reading is known only at its end."""
    stamps = pd.DatetimeIndex(readings[dd.TS])
    values = pd.to_numeric(readings[column], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    means = pd.Series(values, index=stamps).resample(step, label="right", closed="right",
                                                    origin=step_origin(stamps, timezone)).mean()
    interval = meter_interval(readings, column)
    return _held(means, means.index, interval, step) if interval is not None and interval > step else means


def meter_interval(readings: pd.DataFrame, column: str) -> pd.Timedelta | None:
    """A column's own interval: the most common spacing of the readings holding a number in
    it; None without two of them (or without the column)."""
    if column not in readings.columns:
        return None
    return interval_of(readings.loc[pd.to_numeric(readings[column], errors="coerce").notna(), dd.TS])


def coarsest_interval(readings: pd.DataFrame, columns: tuple[str, ...]) -> pd.Timedelta | None:
    """The longest of the columns' own intervals (:func:`meter_interval`); None without any."""
    return max((i for i in (meter_interval(readings, c) for c in columns) if i is not None), default=None)


def _held(values: pd.Series, index: pd.DatetimeIndex, interval: pd.Timedelta, step: pd.Timedelta) -> pd.Series:
    """``values`` (labelled by each interval's end) on the finer steps of ``index``, each
    holding over the steps its interval covers and no further: a gap stays a gap."""
    return values.reindex(index).bfill(limit=int(-(-interval // step)) - 1)


def site_steps(readings: pd.DataFrame, site: Mapping[str, Any], step: pd.Timedelta) -> pd.DataFrame:
    """The readings' :data:`STEP_COLUMNS` means over each step (NaN where a step has none),
    :func:`completed`. Where the balance's meters read at different intervals (an hourly
    utility meter, a 15-minute inverter), the load missing is the balance over the coarsest
    one's intervals, the same in each of its steps: within an hour the grid flow is known
    only as its mean, and adding each quarter hour's PV to it would print the PV's clouds
    on the house load (and a balance below zero wherever the sun came out)."""
    zone = site.get("timezone") or None
    frame = pd.DataFrame({c: per_step(readings, c, step, zone) if c in readings.columns else np.nan for c in STEP_COLUMNS})
    coarse = coarsest_interval(readings, BALANCE_TERMS)
    if coarse is not None and coarse > step and frame[dd.LOAD_TOTAL].isna().any():
        fine = completed(frame.drop(columns=[dd.LOAD_TOTAL]), site, step)  # the PV of dark steps known first
        terms = fine.resample(coarse, label="right", closed="right", origin=step_origin(fine.index, zone)).mean()
        load = completed(terms.assign(**{dd.LOAD_TOTAL: np.nan}), site, coarse)[dd.LOAD_TOTAL]
        frame[dd.LOAD_TOTAL] = frame[dd.LOAD_TOTAL].fillna(_held(load, frame.index, coarse, step))
    return completed(frame, site, step)


def filled_columns(readings: pd.DataFrame) -> set[str]:
    """The columns of ``readings`` holding a number in some row."""
    return {c for c in readings.columns if c != dd.TS and pd.to_numeric(readings[c], errors="coerce").notna().any()}


def balance_lacks(read: Collection[str], site: Mapping[str, Any]) -> list[str]:
    """The meters the house load's balance needs that none of ``read`` (the columns a site's
    readings fill) is: the grid flow always, the PV unless the site declares none, the
    battery's power unless it declares none; each named with the field to import it as."""
    lacking = [f"the grid flow ({dd.NET_GRID_FLOW}, positive when importing)"] if dd.NET_GRID_FLOW not in read else []
    if not declares_none(site, "pv_capacity_kw") and dd.SOLAR_KW not in read:
        declared = (site.get("pv_capacity_kw") or 0) > 0  # NaN or absent: the site says nothing of PV
        lacking.append(f"the PV of the array the site declares ({dd.SOLAR_KW})" if declared
                       else f"the PV ({dd.SOLAR_KW}), or a site file declaring none")
    if not declares_none(site, "battery_capacity_kwh") and dd.BATTERY_POWER not in read:
        capacity = site.get("battery_capacity_kwh")
        lacking.append(f"the power of the {float(capacity):g} kWh battery the site declares ({dd.BATTERY_POWER}, positive "
                       "when charging; a battery not installed yet is declared \"battery\": null, and tried with "
                       "run_optimizer.py --backtest --battery-kwh KWH --battery-kw KW)" if (capacity or 0) > 0 else
                       f"the battery's power ({dd.BATTERY_POWER}, positive when charging), or a site file declaring none")
    return lacking


def balance_formula(site: Mapping[str, Any]) -> str:
    """The house load's balance as the site's declaration makes it (a term it declares none of is 0)."""
    return "grid flow" + " + PV" * (not declares_none(site, "pv_capacity_kw")) \
        + " - battery" * (not declares_none(site, "battery_capacity_kwh"))


def no_load_reason(read: Collection[str], site: Mapping[str, Any]) -> str:
    """Why a site whose readings fill the columns ``read`` (:func:`filled_columns`) has no
    house load at any step ("none measured, and ..."), naming what to import: none was
    measured, and the balance lacks a meter (:func:`balance_lacks`), or, with every term
    read, it is below zero wherever they all read. A home with a battery whose log was not
    imported is the usual case, and "no load readings" alone sends its owner to import the
    grid flow they already did."""
    lacking = balance_lacks(read, site)
    head = f"none measured ({dd.LOAD_TOTAL})"
    if lacking:
        return (f"{head}, and its balance needs {' and '.join(lacking)}; import "
                f"{'them' if len(lacking) > 1 else 'it'} with run_cloud_sync.py --import FILE --column-map COLUMN=FIELD")
    return (f"{head}, and the balance of its meters ({balance_formula(site)}) is below zero wherever they all read: "
            "they disagree; check the grid flow's sign, the units and the clocks of the files")


def completed(steps: pd.DataFrame, site: Mapping[str, Any], step: pd.Timedelta) -> pd.DataFrame:
    """Per-step means (indexed by each step's end, any of :data:`STEP_COLUMNS`) with the PV
    and the house load the module docstring gives where they are missing; a copy."""
    steps = steps.copy()
    if steps.empty:
        return steps
    if dd.SOLAR_KW in steps.columns:
        pv = steps[dd.SOLAR_KW].to_numpy(dtype="float64", na_value=np.nan)
        others = [c for c in STEP_COLUMNS if c != dd.SOLAR_KW and c in steps.columns]
        steps[dd.SOLAR_KW] = _pv(pv, steps.index, site, step, steps[others].notna().any(axis=1).to_numpy())
        _energy(steps, rs.SOLAR_KWH, dd.SOLAR_KW, np.isnan(pv), step)
    if not {dd.LOAD_TOTAL, dd.NET_GRID_FLOW} <= set(steps.columns):
        return steps

    def term(column: str, capacity: str) -> np.ndarray:
        if declares_none(site, capacity):
            return np.zeros(len(steps))
        if column not in steps.columns:
            return np.full(len(steps), np.nan)
        return steps[column].to_numpy(dtype="float64", na_value=np.nan)

    load = steps[dd.LOAD_TOTAL].to_numpy(dtype="float64", na_value=np.nan, copy=True)
    net = steps[dd.NET_GRID_FLOW].to_numpy(dtype="float64", na_value=np.nan)
    balance = dd.house_load_kw(net, term(dd.SOLAR_KW, "pv_capacity_kw"), term(dd.BATTERY_POWER, "battery_capacity_kwh"))
    missing = np.isnan(load) & (balance >= 0)
    load[missing] = balance[missing]
    steps[dd.LOAD_TOTAL] = load
    _energy(steps, rs.LOAD_KWH, dd.LOAD_TOTAL, missing, step)
    return steps


def grid_kw(steps: pd.DataFrame, site: Mapping[str, Any]) -> pd.Series:
    """Each step's grid flow (import positive) from :func:`site_steps`' means: measured where
    a grid meter read it, else the balance of the house load and PV with the battery's power,
    taken as 0 where it was not logged. A home imported as its PV and its load has no grid
    meter, yet it paid the month's demand charge on that balance; a battery whose power was
    not logged (or not yet installed) is counted idle, so the peak is never below what the
    home drew without it, and a plan never counts a charge already paid as one it saves."""
    def column(name: str) -> np.ndarray:
        if name not in steps.columns:
            return np.full(len(steps), np.nan)
        return steps[name].to_numpy(dtype="float64", na_value=np.nan)

    balance = dd.grid_flow_kw(column(dd.LOAD_TOTAL), column(dd.SOLAR_KW), np.nan_to_num(column(dd.BATTERY_POWER), nan=0.0))
    measured = column(dd.NET_GRID_FLOW)
    return pd.Series(np.where(np.isnan(measured), balance, measured), index=steps.index)


def _energy(steps: pd.DataFrame, energy: str, power: str, completed_at: np.ndarray, step: pd.Timedelta) -> None:
    """A feature grid's energy of the steps whose power was completed: that power over the step."""
    if energy in steps.columns and completed_at.any():
        values = steps[energy].to_numpy(dtype="float64", na_value=np.nan, copy=True)
        values[completed_at] = steps[power].to_numpy(dtype="float64", na_value=np.nan)[completed_at] * (step / pd.Timedelta(hours=1))
        steps[energy] = values


def _pv(pv: np.ndarray, ends: pd.Index, site: Mapping[str, Any], step: pd.Timedelta, read: np.ndarray) -> np.ndarray:
    """The PV with its missing steps 0 where the site has none, or where the declared array's
    clear-sky output is 0 at both ends of the step (the sun is down, or behind the array) in
    a series that measured it at all (one without a PV reading says nothing of the array),
    and the logger was alive: another meter read the step (``read``), or the PV's gap is no
    longer than :data:`LONGEST_DARK` (a night an inverter logs nothing in). A logger off for
    days (or years) left its nights unknown: filled, they would count as measured PV, and a
    day of readings two years after the rest would pass for two years of PV to train on."""
    missing = np.isnan(pv)
    if not missing.any():
        return pv
    pv = pv.copy()
    if declares_none(site, "pv_capacity_kw"):
        pv[missing] = 0.0
        return pv
    if not float(site.get("pv_capacity_kw") or 0.0) > 0 or missing.all():  # no array declared, or none of it measured
        return pv
    alive = read | _short_gaps(missing, ends, LONGEST_DARK)
    fill = missing & alive
    ends = pd.DatetimeIndex(ends)[fill]
    config = solar_config(site)
    dark = (clearsky_ac_kw(config, ends) <= 0.0) & (clearsky_ac_kw(config, ends - step) <= 0.0)
    pv[np.flatnonzero(fill)[dark]] = 0.0
    return pv


def _short_gaps(missing: np.ndarray, ends: pd.Index, longest: pd.Timedelta) -> np.ndarray:
    """The missing steps in runs spanning at most ``longest`` between the steps around them."""
    index = pd.DatetimeIndex(ends)
    edges = np.flatnonzero(np.diff(np.concatenate([[False], missing, [False]]).astype(np.int8)))
    short = np.zeros(len(missing), dtype=bool)
    for first, stop in zip(edges[::2], edges[1::2]):
        if index[min(stop, len(index) - 1)] - index[max(first - 1, 0)] <= longest:
            short[first:stop] = True
    return short
