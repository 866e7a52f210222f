"""Speed of the dispatch LP (targets: one 96-step plan < 20 ms median; 1,000 sites' day-ahead
plans < 20 s on a 2-core machine).

    python benchmarks/bench_optimizer.py [--instances 200] [--sites 1000] [--seed 0] [--compare-linprog] [--car-sites 20]

``--car-sites`` also times whole plans of homes with a car (``planner.plan_site`` under the
default guarded execution: the cap's fit, the reserve policy's dynamic program and the LP),
which the LP targets do not cover.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks._machine import describe  # noqa: E402
from cloud.optimization import BatterySpec, HorizonInputs, solve_dispatch, solve_many  # noqa: E402

STEPS, STEP_HOURS = 96, 0.25


def realistic_site(rng: np.random.Generator) -> tuple[HorizonInputs, BatterySpec]:
    """A day of a home: evening-peaking load, clear-or-cloudy PV, TOU price with noise."""
    hours = np.arange(STEPS) * STEP_HOURS
    load_kw = 0.4 + 1.2 * np.exp(-((hours - 19) ** 2) / 6) + rng.gamma(1.2, 0.4, STEPS)
    pv_kw = np.maximum(0.0, rng.uniform(3, 10) * np.sin((hours - 6) / 12 * np.pi)) * rng.uniform(0.4, 1.0, STEPS)
    tou = np.where((hours >= 16) & (hours < 21), 0.30, np.where((hours >= 7) & (hours < 16), 0.15, 0.08))
    price = tou * (1 + 0.15 * rng.standard_normal(STEPS)).clip(0.3)
    inputs = HorizonInputs(
        load_kw, pv_kw, price, np.full(STEPS, 0.05),
        carbon_intensity_g_per_kwh=rng.uniform(150, 450, STEPS), step_hours=STEP_HOURS,
        demand_charge_per_kw=10.0 / 30, peak_so_far_kw=rng.uniform(0, 3), carbon_price_per_kg=0.05,
        export_limit_kw=5.0,
    )
    battery = BatterySpec(
        capacity_kwh=rng.choice([10.0, 13.5, 20.0]), initial_soc_percent=rng.uniform(20, 80), wear_cost_per_kwh=0.02,
    )
    return inputs, battery


def time_single(sites: list[tuple[HorizonInputs, BatterySpec]]) -> list[float]:
    times = []
    for inputs, battery in sites:
        start = time.perf_counter()
        solve_dispatch(inputs, battery)
        times.append(time.perf_counter() - start)
    return times


def time_linprog(sites: list[tuple[HorizonInputs, BatterySpec]]) -> list[float]:
    """The same LP through scipy.optimize.linprog(method="highs"), for comparison."""
    from scipy.optimize import linprog
    from scipy.sparse import csc_matrix

    from cloud.optimization.lp import build_lp

    times = []
    for inputs, battery in sites:
        start = time.perf_counter()
        lp = build_lp(inputs, battery)
        matrix = csc_matrix((lp.a_matrix_.value_, lp.a_matrix_.index_, lp.a_matrix_.start_), shape=(lp.num_row_, lp.num_col_))
        equal = np.asarray(lp.row_lower_) == np.asarray(lp.row_upper_)
        bounds = np.column_stack((lp.col_lower_, np.where(np.asarray(lp.col_upper_) >= 1e30, np.inf, lp.col_upper_)))
        linprog(lp.col_cost_, A_ub=matrix[~equal], b_ub=np.asarray(lp.row_upper_)[~equal],
                A_eq=matrix[equal], b_eq=np.asarray(lp.row_lower_)[equal], bounds=bounds, method="highs")
        times.append(time.perf_counter() - start)
    return times


def summary(label: str, seconds: list[float]) -> str:
    ms = np.array(seconds) * 1e3
    return f"{label}: median {statistics.median(ms):.2f} ms, p95 {np.percentile(ms, 95):.2f} ms, max {ms.max():.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare-linprog", action="store_true")
    parser.add_argument("--car-sites", type=int, default=0, help="also time this many whole plans of homes with a car")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    print(f"machine: {describe()}")
    sites = [realistic_site(rng) for _ in range(args.instances)]
    solve_dispatch(*sites[0])  # first call pays imports and pattern caching
    single = time_single(sites)
    print(summary(f"solve_dispatch, {STEPS} steps x {args.instances} instances", single))
    if args.compare_linprog:
        print(summary("same LP via scipy.optimize.linprog", time_linprog(sites)))

    fleet = [realistic_site(rng) for _ in range(args.sites)]
    start = time.perf_counter()
    plans = solve_many([inputs for inputs, _ in fleet], [battery for _, battery in fleet])
    elapsed = time.perf_counter() - start
    fallback = sum("MIP" in plan.status for plan in plans)
    print(f"solve_many, {args.sites} sites x {STEPS} steps: {elapsed:.2f} s total "
          f"({elapsed / args.sites * 1e3:.2f} ms per site, single process; {fallback} needed the MIP fallback); "
          f"their bills add up to {sum(plan.total_cost for plan in plans):,.2f}")
    met = statistics.median(single) < 0.020 and elapsed < 20.0 * args.sites / 1000
    print("targets (< 20 ms median, 1,000 sites < 20 s):", "met" if met else "NOT met")
    if args.car_sites:
        time_car_sites(args.car_sites)


def time_car_sites(count: int) -> None:
    """Whole guarded plans of homes with a car, from the simulator's history (seeds 1..count)."""
    import pandas as pd

    from cloud.optimization import planner, reserve
    from cloud.optimization.planner import PlanSettings, plan_site
    from der_core.config import build_config

    settings = PlanSettings(start=pd.Timestamp("2024-06-15T00:00"))
    plan_site(build_config({"seed": 1}), settings)  # first call compiles the program (cached on disk after)
    policy, times, bills = [], [], []
    fit = reserve.fit

    def timed_fit(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fit(*args, **kwargs)
        finally:
            policy.append(time.perf_counter() - start)

    planner.reserve.fit = timed_fit
    try:
        for seed in range(1, count + 1):
            start = time.perf_counter()
            bills.append(plan_site(build_config({"seed": seed}), settings).plan.total_cost)
            times.append(time.perf_counter() - start)
    finally:
        planner.reserve.fit = fit
    print(f"plan_site, {count} homes with a car (guarded): median {statistics.median(times):.2f} s per site, "
          f"of which solving the reserve policy {statistics.median(policy):.2f} s; 1,000 such sites ~{statistics.median(times) * 1000 / 60:.0f} min; "
          f"their plans' bills add up to {sum(bills):,.2f}")


if __name__ == "__main__":
    main()
