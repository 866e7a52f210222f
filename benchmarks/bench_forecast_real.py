#!/usr/bin/env python
"""Day-ahead forecast skill on real measured data: a real PV system and a real household.

Builds the project's day-ahead design rows (issued every ``--issue-hours``, 96 quarter-hour
horizons) from the measured series in ``benchmarks.real_data`` and trains and scores every
model with the project's own walk-forward split: the newest ``--test-size`` of issue times is
the test set, training truths never reach into it, and a rolling-origin backtest repeats the
split at earlier origins. Prints, per target, each model's MAE, its skill against "same time
yesterday" (daytime only for PV), and LightGBM's P10-P90 coverage; for PV also clear-sky
persistence (yesterday's measured-to-clear-sky ratio at the same time of day times today's
clear-sky output), and LightGBM once more with the recorded weather given as the weather
forecast, an upper bound: no forecast is as good as the weather that happened.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import real_data  # noqa: E402
from benchmarks._machine import describe  # noqa: E402
from cloud.feature_engineering.physics import solar_config  # noqa: E402
from cloud.forecasting import clear_sky_index as csi  # noqa: E402
from cloud.forecasting import design as dz  # noqa: E402
from cloud.forecasting.evaluation import headline  # noqa: E402
from cloud.forecasting.models import PRIMARY, REFERENCE  # noqa: E402
from cloud.forecasting.targets import LOAD_KW, SOLAR_KW  # noqa: E402
from cloud.forecasting.training import TargetResult, TrainSettings, train_target  # noqa: E402
from cloud.forecasting.weather import CLEAR_SKY_INDEX, TEMP, NoWeatherForecast, WeatherForecast  # noqa: E402
from der_physics.solar import clearsky_ac_kw  # noqa: E402


class RecordedWeather:
    """The weather that happened at each target instant (NSRDB PSM3 at the PV site), handed
    to the models as if it had been forecast: clear-sky index = GHI / clear-sky GHI."""

    def __init__(self, weather: pd.DataFrame):
        with np.errstate(divide="ignore", invalid="ignore"):
            index = np.where(weather["ghi_clear"] > 0, weather["ghi"] / weather["ghi_clear"], np.nan)
        self._table = pd.DataFrame({TEMP: weather["temp_air"].to_numpy(), CLEAR_SKY_INDEX: np.clip(index, 0, csi.MAX_RATIO)},
                                   index=weather.index)

    def forecast(self, site, issued_at, target_ts) -> pd.DataFrame:
        grid = self._table.index.union(pd.DatetimeIndex(target_ts).unique())
        seen = self._table.reindex(grid).interpolate(method="time", limit=1).reindex(pd.DatetimeIndex(target_ts))
        return seen.reset_index(drop=True)


def window(series: pd.Series, days: float | None) -> pd.Series:
    """The newest ``days`` of the series (all of it without a limit)."""
    series = series.dropna()
    return series if days is None else series[series.index > series.index[-1] - pd.Timedelta(days=days)]


def train(series: pd.Series, site: dict, target: str, settings: TrainSettings,
          weather: WeatherForecast) -> TargetResult:
    history = dz.site_history(real_data.readings(site["device_id"], series), site, real_data.STEP)
    return train_target([history], target, settings, weather)


def clear_sky_persistence(result: TargetResult, site: dict) -> np.ndarray:
    """Yesterday's clear-sky index at the same time of day, times the clear-sky output at the
    target (0 where yesterday's sun was down at that time: ``csi.index_by_day``)."""
    rows = result.test_rows
    config = solar_config(site)
    target = pd.DatetimeIndex(rows[dz.TARGET_TS])
    days_back = np.ceil(rows[dz.HORIZON_STEPS].to_numpy() / (pd.Timedelta(days=1) / real_data.STEP))
    then = clearsky_ac_kw(config, target - pd.to_timedelta(days_back, unit="D"))
    index = csi.index_by_day(rows[dz.LAG_DAY].to_numpy(dtype="float64"), then, csi.sun_up(then, config.inverter_limit_kw))
    return index * rows[dz.CLEARSKY_KW].to_numpy(dtype="float64")


def report(result: TargetResult, target: str, label: str) -> dict:
    print(f"{label}: train {result.train_range[0]:%Y-%m-%d} to {result.train_range[1]:%Y-%m-%d}, "
          f"test {result.test_range[0]:%Y-%m-%d} to {result.test_range[1]:%Y-%m-%d}")
    scope = "daytime" if target == SOLAR_KW else "all hours"
    for kind, metrics in result.metrics.items():
        if kind == "backtest":
            continue
        m = headline(metrics, target)
        print(f"  {kind:<20} MAE {m['mae']:.4f} kW  skill vs same time yesterday {m['skill']:+7.1%}  "
              f"P10-P90 coverage {m['coverage_p10_p90']:6.1%}  ({m['rows']:,} {scope} rows)")
    for fold in result.metrics["backtest"]:
        print(f"  backtest fold from {fold['origin'][:10]}: {PRIMARY} skill {fold['skill']:+.1%}, "
              f"coverage {fold['coverage_p10_p90']:.1%}")
    return headline(result.metrics[PRIMARY], target)


def pv_against_clear_sky(result: TargetResult, site: dict) -> None:
    rows = result.test_rows
    day = rows[dz.DAYTIME].to_numpy(dtype=bool)
    y = rows[dz.Y].to_numpy(dtype="float64")[day]
    clear = clear_sky_persistence(result, site)[day]
    naive = rows[f"{REFERENCE}_p50"].to_numpy(dtype="float64")[day]
    ok = np.isfinite(y) & np.isfinite(clear) & np.isfinite(naive)
    mae = {"clear-sky persistence": np.mean(np.abs(clear[ok] - y[ok])), "naive": np.mean(np.abs(naive[ok] - y[ok]))}
    for kind in ("ridge", PRIMARY):
        if f"{kind}_p50" in rows.columns:
            mae[kind] = np.mean(np.abs(rows[f"{kind}_p50"].to_numpy(dtype="float64")[day][ok] - y[ok]))
    print(f"  clear-sky persistence MAE {mae['clear-sky persistence']:.4f} kW  skill vs same time yesterday "
          f"{1 - mae['clear-sky persistence'] / mae['naive']:+.1%}")
    for kind in ("ridge", PRIMARY):
        if kind in mae:
            print(f"  {kind} skill vs clear-sky persistence {1 - mae[kind] / mae['clear-sky persistence']:+.1%}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=None, help="only the newest DAYS of each series (default: all)")
    parser.add_argument("--issue-hours", type=float, default=6.0, help="hours between forecast issues")
    parser.add_argument("--test-size", type=float, default=0.2)
    parser.add_argument("--folds", type=int, default=2, help="rolling-origin backtest folds")
    args = parser.parse_args()
    settings = TrainSettings(issue_every=pd.Timedelta(hours=args.issue_hours), test_size=args.test_size,
                             backtest_folds=args.folds)
    began = time.perf_counter()
    pv = window(real_data.pv_series(), args.days)
    pv_site = real_data.pv_site(pv)
    load = window(real_data.load_series(), args.days)
    print(f"PV:   {real_data.PV_SOURCE.describe()}")
    print(f"      used {pv.index[0]:%Y-%m-%d} to {pv.index[-1]:%Y-%m-%d}; capacity taken as the peak, "
          f"{pv_site['pv_capacity_kw']} kW")
    print(f"Load: {real_data.LOAD_SOURCE.describe()}")
    print(f"      used {load.index[0]:%Y-%m-%d} to {load.index[-1]:%Y-%m-%d}, 15-min means")
    print(f"Weather (PV upper bound only): {real_data.PV_WEATHER_SOURCE.describe()}")
    figures = {}
    result = train(load, real_data.load_site(), LOAD_KW, settings, NoWeatherForecast())
    figures["load"] = report(result, LOAD_KW, "Household load, no weather input")
    result = train(pv, pv_site, SOLAR_KW, settings, NoWeatherForecast())
    figures["pv"] = report(result, SOLAR_KW, "Daytime PV, no weather input")
    pv_against_clear_sky(result, pv_site)
    result = train(pv, pv_site, SOLAR_KW, settings, RecordedWeather(real_data.pv_weather()))
    figures["pv_weather"] = report(result, SOLAR_KW, "Daytime PV, recorded weather given as the forecast")
    print("summary (LightGBM, test set): "
          f"load skill {figures['load']['skill']:+.1%}, coverage {figures['load']['coverage_p10_p90']:.1%}; "
          f"daytime PV skill {figures['pv']['skill']:+.1%}, coverage {figures['pv']['coverage_p10_p90']:.1%}; "
          f"with recorded weather {figures['pv_weather']['skill']:+.1%}, "
          f"coverage {figures['pv_weather']['coverage_p10_p90']:.1%}")
    print(f"ran in {time.perf_counter() - began:.0f} s; machine: {describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
