"""What a battery and its MPC save a real home, month by month, on measured PV and load
(targets: the MPC's bill below the self-consumption rule's every month, and at least 80 % of
perfect foresight's savings captured).

    python benchmarks/bench_backtest_real.py [--months 3 | --month 2012-10 ...] [--workers 2] [--kwp 5]
        [--policy-every-minutes 360]

The home: the PV measured at NREL's PVDAQ system 50 (Golden, Colorado; benchmarks/real_data.py)
scaled to a ``--kwp`` array by its ratio to the system's largest measured output (3.4 kW),
with the same orientation and an inverter of that size; the household load measured in
Sceaux, France, aligned onto the PV's dates by calendar day and local time of day four years
earlier (the PV's 2011 to 2013 take the load's 2007 to 2009, so 2012 meets leap year 2008 and
the day of the year matches throughout; at the autumn DST change the repeated local hour takes
the load's first); a 13.5 kWh / 5 kW battery (90 % round trip, 10 to 90 % SOC) and the
default TOU tariff, declared as a real site is (``der_core.site_file``) and backtested as
``run_optimizer.py --backtest`` backtests one (cloud/evaluation/recorded.py): naive
forecaster, PV from the declared array under the clear sky scaled by yesterday's measured
clear-sky index, no weather forecast. Every whole calendar month of the PV with a week of
readings before it runs on its own, its battery starting at the declared SOC, on every reading
before it: the peak guard and the reserve policy learn from the four weeks before each
decision, as at a site that has run since its first reading, not from a month's first days.
Prints one line per month, then the totals.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmarks import real_data  # noqa: E402
from benchmarks._machine import describe  # noqa: E402
from cloud.evaluation import backtest as bt  # noqa: E402
from cloud.evaluation.recorded import run_recorded_backtest  # noqa: E402
from cloud.evaluation.report import savings_and_capture  # noqa: E402
from cloud.optimization import forecasters as fc  # noqa: E402
from der_core.site_file import build_site, planning_config  # noqa: E402

#: The load's year for each of the PV's: four years earlier, leap year onto leap year.
YEARS_BACK = 4
LOAD_ZONE = real_data.LOAD_LOCATION["timezone"]


def home(kwp: float) -> tuple[dict, pd.DataFrame]:
    """The home's site declaration and its recorded load and PV per 15-minute reading instant."""
    pv = real_data.pv_series()
    scale = kwp / real_data.pv_site(pv)["pv_capacity_kw"]
    instants = pd.date_range(pv.index.min(), pv.index.max(), freq=real_data.STEP)
    pv = pv[~pv.index.duplicated()].reindex(instants) * scale
    load = real_data.load_series()
    wall = load.index.tz_convert(LOAD_ZONE).tz_localize(None)
    load = pd.Series(load.to_numpy(), index=wall)
    load = load[~load.index.duplicated()]
    pv_wall = instants.tz_convert(real_data.PV_LOCATION["timezone"]).tz_localize(None)
    aligned = load.reindex(pv_wall - pd.DateOffset(years=YEARS_BACK)).to_numpy()
    where = real_data.PV_LOCATION
    site = {
        "device_id": "real-home", "timezone": where["timezone"], "country": where["country"], "currency": "USD",
        "location": {"latitude": where["latitude"], "longitude": where["longitude"], "altitude_m": where["altitude_m"]},
        "pv": {"capacity_kwp": kwp, "tilt_degrees": where["tilt_degrees"], "azimuth_degrees": where["azimuth_degrees"],
               "inverter_kw": kwp},
        "battery": {"capacity_kwh": 13.5, "max_charge_kw": 5.0, "max_discharge_kw": 5.0, "round_trip_efficiency": 0.9,
                    "min_soc": 10.0, "max_soc": 90.0},
        "ev_charger": None, "tariff": "default_tou",
    }
    return site, pd.DataFrame({fc.LOAD: aligned, fc.PV: pv.to_numpy()}, index=instants)


def months_of(recorded: pd.DataFrame, timezone: str) -> list[pd.Timestamp]:
    """Local starts of every whole calendar month with at least a week of readings before it."""
    seen = recorded.dropna().index.tz_convert(timezone)
    first = (seen[0].normalize() + pd.DateOffset(days=1 + fc.HISTORY_DAYS))
    starts = pd.date_range(first.tz_localize(None).to_period("M").to_timestamp(), seen[-1].tz_localize(None), freq="MS")
    return [start.tz_localize(timezone) for start in starts
            if start.tz_localize(timezone) >= first and start.tz_localize(timezone) + pd.DateOffset(months=1) <= seen[-1]]


def one(site: dict, recorded: pd.DataFrame, start: pd.Timestamp, policy_every_minutes: int | None = None) -> dict:
    config = planning_config(build_site(site))
    end = start + pd.DateOffset(months=1)
    window = recorded.loc[: end + pd.Timedelta(days=1)]  # every reading before the month: see the docstring
    began = time.perf_counter()
    settings = bt.BacktestSettings(start=start, policy_every_minutes=policy_every_minutes)
    result = run_recorded_backtest(config, window, settings, days=(end - start).days)
    bills = {name: run.valued_total for name, run in result.runs.items()}  # less the energy each left stored
    peaks = {f"{name}_peak": float(run.grid_kw.max()) for name, run in result.runs.items()}
    _, capture = savings_and_capture(bills[bt.NO_BATTERY], bills[bt.MPC], bills[bt.PERFECT])
    return {"month": start.strftime("%Y-%m"), **bills, **peaks, "filled": result.filled_steps, "steps": len(result.actuals),
            "capture": capture,
            "seconds": time.perf_counter() - began}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--months", type=int, help="only the first N months (default: every whole month)")
    parser.add_argument("--month", action="append", metavar="YYYY-MM", help="only this month (repeatable)")
    parser.add_argument("--workers", type=int, default=2, help="months run in parallel (default 2)")
    parser.add_argument("--kwp", type=float, default=5.0, help="the home's PV array (default 5 kWp)")
    parser.add_argument("--policy-every-minutes", type=int, default=None,
                        help="also re-solve the reserve policy this often (default: at each local midnight only)")
    args = parser.parse_args()
    site, recorded = home(args.kwp)
    starts = months_of(recorded, site["timezone"])[: args.months]
    if args.month:
        unknown = sorted(set(args.month) - {start.strftime("%Y-%m") for start in starts})
        if unknown:
            parser.error(f"--month {', '.join(unknown)}: expected a whole month of the PV, "
                         f"{starts[0]:%Y-%m} to {starts[-1]:%Y-%m}")
        starts = [start for start in starts if start.strftime("%Y-%m") in args.month]
    print(describe())
    print(f"PV: {real_data.PV_SOURCE.describe()}, scaled to {args.kwp:g} kWp\nload: {real_data.LOAD_SOURCE.describe()}, "
          f"{YEARS_BACK} years earlier\n13.5 kWh / 5 kW battery, default TOU tariff, naive forecaster; {len(starts)} months"
          + (f"; policy re-solved every {args.policy_every_minutes} min" if args.policy_every_minutes else ""))
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        rows = list(pool.map(one, [site] * len(starts), [recorded] * len(starts), starts,
                             [args.policy_every_minutes] * len(starts)))
    print(f"{'month':8} {'no battery':>10} {'rule':>8} {'MPC':>8} {'perfect':>8} {'capture':>8} {'MPC<rule':>8} {'filled':>7} {'peak kW: none':>13} {'MPC':>5} {'perfect':>7}")
    for row in rows:
        print(f"{row['month']:8} {row[bt.NO_BATTERY]:10.2f} {row[bt.SELF_CONSUMPTION]:8.2f} {row[bt.MPC]:8.2f} "
              f"{row[bt.PERFECT]:8.2f} {row['capture']:8.1%} {'yes' if row[bt.MPC] < row[bt.SELF_CONSUMPTION] else 'NO':>8} "
              f"{row['filled'] / row['steps']:7.1%} {row[bt.NO_BATTERY + '_peak']:13.2f} {row[bt.MPC + '_peak']:5.2f} "
              f"{row[bt.PERFECT + '_peak']:7.2f}")
    total = {name: sum(row[name] for row in rows) for name in (bt.NO_BATTERY, bt.SELF_CONSUMPTION, bt.MPC, bt.PERFECT)}
    _, capture = savings_and_capture(total[bt.NO_BATTERY], total[bt.MPC], total[bt.PERFECT])
    beats = sum(row[bt.MPC] < row[bt.SELF_CONSUMPTION] for row in rows)
    captured = sum(row["capture"] >= 0.8 for row in rows)
    print(f"{'total':8} {total[bt.NO_BATTERY]:10.2f} {total[bt.SELF_CONSUMPTION]:8.2f} {total[bt.MPC]:8.2f} "
          f"{total[bt.PERFECT]:8.2f} {capture:8.1%}")
    print(f"MPC beats the rule in {beats} of {len(rows)} months and captures >= 80 % in {captured}; "
          f"worst capture {min(row['capture'] for row in rows):.1%}; "
          f"{np.mean([row['seconds'] for row in rows]):.0f} s per month")
    return 0


if __name__ == "__main__":
    sys.exit(main())
