"""Data for the dashboard's benchmark and tests: simulated sites, and per site a forecast and a
plan in the tables' shapes, so both measure and check the same kind of store.

The forecast is same-time-yesterday with +-20 % bands (test data, not a forecaster); the plan
comes from the real optimizer over that forecast.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cloud.optimization import BatterySpec, HorizonInputs, solve_dispatch
from cloud.store import schema as s
from cloud.store.base import CloudStore
from der_core import der_data as dd
from der_core.config import SimulatorConfig
from der_physics import generator

STEP = pd.Timedelta(minutes=15)  # the planner's step
STEPS = 96  # one day of steps
FORECAST_TARGETS = (("load_kw", dd.LOAD_TOTAL), ("solar_kw", dd.SOLAR_KW), ("price_per_kwh", dd.PRICE))


def simulated(configs: Sequence[SimulatorConfig], start: str, end: str) -> pd.DataFrame:
    """Every site's readings in ``[start, end)`` from the simulator, as one frame."""
    frames = generator.historical(list(configs), pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC"))
    return pd.concat(list(frames), ignore_index=True)


def last_day(history: pd.DataFrame, device: str) -> pd.DataFrame:
    """The site's last day of readings at the planner's step (readings may come more often)."""
    mine = history[history[dd.DEVICE_ID] == device]
    on_step = (mine[dd.TS] - mine[dd.TS].dt.floor(STEP)) == pd.Timedelta(0)
    return mine[on_step].tail(STEPS)


def site_forecasts(day: pd.DataFrame, device: str, issued: pd.Timestamp) -> pd.DataFrame:
    """The day after ``day``, forecast as a copy of it with +-20 % bands, issued at ``issued``."""
    ts = day[dd.TS] + pd.Timedelta(days=1)
    frames = []
    for target, column in FORECAST_TARGETS:
        value = day[column].to_numpy()
        frames.append(pd.DataFrame({dd.DEVICE_ID: device, dd.TS: ts.to_numpy(), s.TARGET: target,
                                    s.MODEL: "seasonal_naive", s.ISSUED_AT: issued, s.VALUE: value,
                                    s.LOWER: value * 0.8, s.UPPER: value * 1.2}))
    return pd.concat(frames, ignore_index=True)


def site_plan(config: SimulatorConfig, forecast: pd.DataFrame, feed_in: np.ndarray, issued: pd.Timestamp) -> pd.DataFrame:
    """The optimizer's plan over ``forecast``, as ``dispatch_plans`` rows."""
    by_target = {t: rows.sort_values(dd.TS) for t, rows in forecast.groupby(s.TARGET)}
    price = by_target["price_per_kwh"][s.VALUE].to_numpy()
    inputs = HorizonInputs(load_kw=by_target["load_kw"][s.VALUE].to_numpy(), pv_kw=by_target["solar_kw"][s.VALUE].to_numpy(),
                           import_price_per_kwh=price, export_price_per_kwh=np.minimum(feed_in, price))
    plan = solve_dispatch(inputs, BatterySpec.from_config(config.battery))
    return pd.DataFrame({dd.DEVICE_ID: config.device_id, dd.TS: by_target["load_kw"][dd.TS].to_numpy(), s.ISSUED_AT: issued,
                         dd.BATTERY_POWER: plan.battery_power_kw, dd.BATTERY_SOC: plan.soc_percent[1:],
                         dd.NET_GRID_FLOW: plan.grid_kw, s.PLAN_PRICE: price, s.EXPECTED_COST: plan.step_cost,
                         s.OBJECTIVE: "min_cost"})


def store_forecasts_and_plans(store: CloudStore, configs: Sequence[SimulatorConfig], history: pd.DataFrame,
                              issued: pd.Timestamp) -> None:
    """Per site, a forecast of the day after its last and the plan over it, both issued at ``issued``."""
    for config in configs:
        day = last_day(history, config.device_id)
        forecast = site_forecasts(day, config.device_id, issued)
        store.upsert_frame(s.FORECASTS, forecast)
        store.upsert_frame(s.PLANS, site_plan(config, forecast, day[dd.FEED_IN].to_numpy(), issued))
