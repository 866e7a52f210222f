#!/usr/bin/env python
"""Training on a million feature rows: seconds, rows and the machine.

Simulates ``--sites`` homes for ``--days`` (15-minute readings, fixed seed) and builds the
day-ahead design rows of household load (issued every 6 hours, 96 horizons each) until there
are ``--rows`` of them (not timed, but reported). Then times the training of every model the
registry keeps for a target on those rows (persistence, both seasonal naives, ridge, and the
three LightGBM quantile models), with LightGBM's share shown on its own.
Target (issue 6): under 60 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import describe  # noqa: E402
from cloud.forecasting import design as dz  # noqa: E402
from cloud.forecasting.models import MODELS, PRIMARY  # noqa: E402
from cloud.forecasting.targets import LOAD_KW  # noqa: E402
from cloud.forecasting.training import TrainSettings, design_rows, fit_models  # noqa: E402
from cloud.forecasting.weather import SimulatedWeatherForecast  # noqa: E402
from edge_gateway import generator  # noqa: E402
from edge_gateway.config import build_config, site_record  # noqa: E402
from edge_gateway.sites import site_configs  # noqa: E402

START = pd.Timestamp("2024-03-01T00:00:00Z")
STEP = pd.Timedelta(minutes=15)
TARGET_S = 60.0


def feature_rows(sites: int, days: int, rows: int) -> pd.DataFrame:
    configs = site_configs(build_config({"seed": 2024, "device_id": "bench", "interval_seconds": 900}), sites)
    simulation, _ = generator.simulate(configs, generator.time_range(START, START + pd.Timedelta(days=days), 900))
    readings = simulation.frame()
    histories = [dz.site_history(readings[readings["device_id"] == c.device_id], site_record(c), STEP) for c in configs]
    built = design_rows(histories, LOAD_KW, TrainSettings(issue_every=pd.Timedelta(hours=6)), SimulatedWeatherForecast())
    if len(built) < rows:
        raise SystemExit(f"only {len(built):,} rows from {sites} sites x {days} days; raise --sites or --days")
    return built.iloc[:rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sites", type=int, default=50)
    parser.add_argument("--days", type=int, default=62)
    args = parser.parse_args()
    began = time.perf_counter()
    rows = feature_rows(args.sites, args.days, args.rows)
    print(f"setup (not timed): {len(rows):,} feature rows x {len(dz.FEATURES)} features from {args.sites} sites x "
          f"{args.days} days in {time.perf_counter() - began:.1f} s")
    timings = {}
    for kind in MODELS:
        began = time.perf_counter()
        fit_models(rows, LOAD_KW, [kind], {})
        timings[kind] = time.perf_counter() - began
    total = sum(timings.values())
    for kind, seconds in timings.items():
        print(f"  {kind:<20} {seconds:6.1f} s")
    verdict = "meets" if total < TARGET_S else "misses"
    print(f"trained every model on {len(rows):,} rows in {total:.1f} s (LightGBM P10/P50/P90: {timings[PRIMARY]:.1f} s); "
          f"{verdict} the {TARGET_S:.0f} s target")
    print(f"machine: {describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
