"""Backtest on recorded data: a measured site's own days through the backtest's strategies.

A declared site (``der_core.site_file``) has no simulator behind it; what happened there is
what its meter recorded. :func:`recorded_series` reads its load and PV per step from the
cloud store, and :func:`run_recorded_backtest` replays them through the same battery step
(:func:`der_physics.generator.recorded_exogenous`) under every strategy of backtest.py,
billed at its declared tariff; a dynamic tariff at the site's stored prices in force, the
latest publication of each interval (``cloud.live.inputs.SiteInputs.prices_in_force``):

* the MPC decides on what was known at each decision: the forecaster's load from the
  readings before it (the naive one unless trained models cover the site and learnt
  nothing after the first day, ``forecasters.choose``), the declared system's PV under the
  clear sky scaled by the weather forecasts issued before it (the site's stored weather
  service's where it names one) or else by the PV measured before it
  (:func:`pv_forecast.pv_forecast` with ``measured=``), and the prices published by then
  (``SiteInputs.wholesale``);
* perfect foresight solves the LP on the recorded values and the prices in force.

Its battery is the declared one or a what-if one (:func:`with_battery`). A site without a car
runs the MPC as a simulated one does: the peak guard's cap and standing reserve, fitted on
its recorded weeks before each decision. A site with a car runs it ``capped``: the reserve
policy follows car sessions the simulator times, and a recorded site has only its total load. Steps without a reading inside the backtested days are
filled by linear interpolation in time and counted (:attr:`BacktestResult.filled_steps`);
the forecasts never see the filled values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pandas as pd
from pydantic import ValidationError

from cloud.evaluation.backtest import (
    BacktestResult,
    BacktestSettings,
    backtest_window,
    resolved_forecaster,
    run_strategies,
)
from cloud.live.inputs import SiteInputs
from cloud.optimization import forecasters as fc
from cloud.optimization.decision import Execution
from cloud.optimization.pv_forecast import MeasuredPV
from cloud.site_steps import STEP_COLUMNS, coarsest_interval, filled_columns, no_load_reason, site_steps
from der_core import der_data as dd
from der_core.cli_support import duration, local_instant
from der_core.config import BatteryConfig, SimulatorConfig, validation_line
from der_core.errors import UsageError
from der_core.runs import true_runs
from der_physics import generator
from der_physics.solar import clear_sky_output

#: The backtest's step where the site's meters read at least this often.
DEFAULT_STEP = pd.Timedelta(minutes=15)


def recorded_series(store, device_id: str, step: pd.Timedelta) -> pd.DataFrame:
    """The site's recorded load and PV (:data:`forecasters.LOAD`, :data:`forecasters.PV`), the
    mean of its readings over each step, completed as :mod:`cloud.site_steps` says (the load
    from the balance where none was measured, PV 0 where the site has none or the sun is
    down); NaN where a step has none."""
    return recorded_steps(store, device_id, step)[0]


def recorded_steps(store, device_id: str, step: pd.Timedelta | None) -> tuple[pd.DataFrame, pd.Timedelta]:
    """:func:`recorded_series` over ``step``, else over the step its meters allow
    (:func:`meter_step`), and that step."""
    readings = store.read_readings(device_id, columns=list(STEP_COLUMNS))
    if readings.empty:
        raise UsageError(f"{device_id}: the cloud store ({store.label}) holds no readings of it to backtest; import its "
                         "meter data with run_cloud_sync.py --import FILE --site FILE")
    step = meter_step(readings, device_id, step)
    site = next((row for row in store.sites() if row[dd.DEVICE_ID] == device_id), {})
    steps = site_steps(readings, site, step)
    if steps[dd.LOAD_TOTAL].isna().all():
        raise UsageError(f"{device_id}: no house load: {no_load_reason(filled_columns(readings), site)}")
    if steps[dd.SOLAR_KW].isna().all():  # a site declaring no PV has it at 0, not missing
        raise UsageError(f"{device_id}: no PV readings ({dd.SOLAR_KW}) of the array the site declares; import them with "
                         "run_cloud_sync.py --import FILE --column-map COLUMN=FIELD, or declare \"pv\": null if it has none")
    return pd.DataFrame({fc.LOAD: steps[dd.LOAD_TOTAL], fc.PV: steps[dd.SOLAR_KW]}), step


def meter_step(readings: pd.DataFrame, device_id: str, asked: pd.Timedelta | None) -> pd.Timedelta:
    """The backtest's step: ``asked``, else :data:`DEFAULT_STEP` or the site's coarsest meter
    interval (the most common spacing of each of its load, PV, grid and battery readings),
    whichever is longer. A utility meter read every 30 or 60 minutes says nothing of the
    steps inside its interval, and is billed over whole intervals, so a finer step is
    refused rather than invented."""
    meter = coarsest_interval(readings, STEP_COLUMNS)
    if asked is None:
        step = DEFAULT_STEP if meter is None or meter <= DEFAULT_STEP else meter
        if pd.Timedelta(days=1) % step:
            raise UsageError(f"{device_id}: readings every {duration(meter)}, a step that does not divide a day; "
                             "expected --step-minutes, a whole number of minutes dividing a day, of that or more")
        return step
    if meter is not None and asked < meter:
        raise UsageError(f"--step-minutes {asked / pd.Timedelta(minutes=1):g}: {device_id} has readings every "
                         f"{duration(meter)}, which say nothing of shorter steps; expected {meter / pd.Timedelta(minutes=1):g} "
                         "or more (the default)")
    return asked


def with_battery(config: SimulatorConfig, capacity_kwh: float | None, power_kw: float | None) -> SimulatorConfig:
    """The site with a what-if battery of ``capacity_kwh`` charging and discharging at up to
    ``power_kw`` (its other properties as declared, else the defaults), or with its declared
    battery when neither is given."""
    if capacity_kwh is None and power_kw is None:
        if config.battery.capacity_kwh <= 0 or config.battery.max_discharge_rate_kw <= 0:
            raise UsageError(f"{config.device_id} declares no battery: give a what-if one with --battery-kwh and --battery-kw")
        return config
    if capacity_kwh is None or power_kw is None:
        raise UsageError("a what-if battery needs both --battery-kwh and --battery-kw")
    try:
        battery = BatteryConfig(**{**config.battery.model_dump(), "capacity_kwh": capacity_kwh,
                                   "max_charge_rate_kw": power_kw, "max_discharge_rate_kw": power_kw})
    except ValidationError as error:
        raise UsageError(f"--battery-kwh {capacity_kwh:g} --battery-kw {power_kw:g}: {validation_line(error)}") from None
    return config.model_copy(update={"battery": battery})


def recorded_settings(config: SimulatorConfig, settings: BacktestSettings, recorded: pd.DataFrame,
                      days: int | None) -> BacktestSettings:
    """The whole local days backtested: from ``settings.start`` (default: the first local
    midnight with a week of readings before it, else a day) for ``days`` days (default: every
    whole day up to the newest reading). Each needs a day of readings before it, the least the
    naive forecaster plans from."""
    tz = config.timezone
    seen = recorded.dropna(how="all").index
    if seen.empty:
        raise UsageError(f"{config.device_id}: no load or PV readings to backtest")
    first_midnight = seen[0].tz_convert(tz).normalize()
    earliest = first_midnight + pd.DateOffset(days=1)
    last_midnight = seen[-1].tz_convert(tz).normalize()
    if settings.start is None:
        week = first_midnight + pd.DateOffset(days=1 + fc.HISTORY_DAYS)
        start = week if week < last_midnight else earliest
    else:
        start = pd.Timestamp(settings.start)
        start = local_instant(start, tz, "--start").tz_convert(tz).normalize()
    if start < earliest:
        raise UsageError(f"--start {start.date()}: the backtest needs a day of readings before it; the first is "
                         f"{dd.format_ts(seen[0])}, so start on {earliest.date()} or later")
    whole = (last_midnight.tz_localize(None) - start.tz_localize(None)).days
    if whole < 1 and settings.start is None:  # the earliest start already: no --start or --days would help
        raise UsageError(f"{config.device_id}: readings from {dd.format_ts(seen[0])} to {dd.format_ts(seen[-1])}, too few "
                         f"to backtest: its first day, {start.date()}, needs a day of readings before it and the whole "
                         f"day itself; expected readings until {(start + pd.DateOffset(days=1)).isoformat()} or later")
    if whole < 1 or (days is not None and days > whole):
        raise UsageError(f"{config.device_id}: readings end {dd.format_ts(seen[-1])}, {max(whole, 0)} whole day(s) "
                         f"after {start.date()}; ask for fewer --days or an earlier --start")
    return dataclasses.replace(settings, start=start, days=whole if days is None else days)


def recorded_actuals(config: SimulatorConfig, recorded: pd.DataFrame, instants: pd.DatetimeIndex,
                     inputs: SiteInputs | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """What happened at ``instants`` (:data:`forecasters.COLUMNS`): the recorded load and PV
    (gaps filled as the module says; 0 kW of PV at a site that declares none), the declared
    tariff's prices (a dynamic one's from the prices in force, :meth:`SiteInputs.prices_in_force`);
    and which steps were filled."""
    window = recorded.reindex(instants)
    if config.solar.capacity_kw <= 0:
        window[fc.PV] = window[fc.PV].fillna(0.0)
    missing = window[[fc.LOAD, fc.PV]].isna().any(axis=1)
    filled = window[[fc.LOAD, fc.PV]].interpolate(method="time", limit_area="inside")
    if filled.isna().any().any():
        raise UsageError(f"{config.device_id}: no readings at the start or end of the backtested days; choose "
                         "--start and --days inside the recorded period")
    in_force = inputs.prices_in_force(instants) if inputs is not None else None
    if in_force is not None and np.isnan(in_force).any():
        first = instants[np.isnan(in_force)][0]
        raise UsageError(f"{config.device_id}: no stored price of {inputs.prices.name} {inputs.prices.area} for the step "
                         f"ending {dd.format_ts(first)}; fetch its prices for the backtested days (docs/operations.md) "
                         "or choose --start and --days inside them")
    actuals = fc.tariff_forecast(config, instants, clear_sky_output(config.solar, instants).clear_sky_ghi_w_m2, in_force)
    actuals[fc.LOAD], actuals[fc.PV] = filled[fc.LOAD].to_numpy(), np.maximum(filled[fc.PV].to_numpy(), 0.0)
    return actuals[list(fc.COLUMNS)], missing.to_numpy(dtype=bool)


def run_recorded_backtest(config: SimulatorConfig, recorded: pd.DataFrame, settings: BacktestSettings,
                          days: int | None = None, progress: Callable = lambda it, **_: it, store=None,
                          inputs: SiteInputs | None = None) -> BacktestResult:
    """Every strategy of backtest.py over the site's recorded days (:func:`recorded_settings`).

    ``recorded``: its load and PV per reading instant (:func:`recorded_series`), the days
    before the backtest included; ``inputs``: the site's outside inputs, its weather forecasts
    and prices (``cloud.live.inputs.stored_site_inputs``; None: no weather forecast, and the
    tariff needs no prices)."""
    config = config.model_copy(update={"interval_seconds": settings.step_minutes * 60})
    if Execution(settings.execution) == Execution.GUARDED and config.home_load.ev_charger_kw > 0:
        settings = dataclasses.replace(settings, execution=Execution.CAPPED)
    settings = recorded_settings(config, settings, recorded, days)
    instants = backtest_window(config, settings)
    actuals, filled = recorded_actuals(config, recorded, instants, inputs)
    history = recorded.loc[: instants[-1]]
    exo = generator.recorded_exogenous(config, instants, *(actuals[column].to_numpy() for column in
                                                           (fc.LOAD, fc.PV, fc.IMPORT_PRICE, fc.EXPORT_PRICE, fc.CARBON)))
    measured = MeasuredPV(history[fc.PV].dropna(), inputs.weather_forecast() if inputs is not None else None)
    forecaster, settings = resolved_forecaster(settings, config, history, instants, store=store, measured=measured,
                                               wholesale=inputs.wholesale if inputs is not None else None)
    runs, replans = run_strategies(config, actuals, settings, forecaster, progress, history, exo, measured)
    starts, stops = true_runs(filled)
    longest = int(np.argmax(stops - starts)) if len(starts) else None
    return BacktestResult(config, settings, actuals, runs, replans, int(filled.sum()), forecaster.reason,
                          None if longest is None else (instants[starts[longest]], int(stops[longest] - starts[longest])))
