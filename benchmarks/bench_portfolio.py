"""Portfolio scale figures (targets, 2-core machine): 200 prosumers x 744 h with all
strategies < 60 s; 10,000 sites x one year hourly, rule-based < 5 min; archetype estimates
for 37,489 sites < 10 s with MAE < 5 % of annual cost; central re-plan rate 100 -> 10,000.

    python benchmarks/bench_portfolio.py [--only small,year,archetypes,replan] [--year-sites 10000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import describe  # noqa: E402
from cloud.portfolio import archetypes, speed  # noqa: E402
from cloud.portfolio.distributed import dask_client, dask_mapper  # noqa: E402
from cloud.portfolio.engine import RunSpec, default_partitions, run_portfolio  # noqa: E402
from cloud.portfolio.fleet import draw_fleet, draw_sites  # noqa: E402
from cloud.portfolio.kpis import combine, summary  # noqa: E402
from cloud.portfolio.scenario import SCENARIOS  # noqa: E402
from cloud.portfolio.strategies import STRATEGIES  # noqa: E402

START = pd.Timestamp("2025-07-01T00:00:00-07:00")


def hourly(hours: int, start: pd.Timestamp = START) -> pd.DatetimeIndex:
    return pd.date_range(start.tz_convert("UTC"), periods=hours, freq="h")


def bench_fleet(client, sites: int, hours: int, strategies, scenario: str) -> None:
    spec = RunSpec(draw_fleet(sites, 1), hourly(hours), strategies, SCENARIOS[scenario], 1)
    start = time.perf_counter()
    parts, limits = run_portfolio(spec, default_partitions(spec, 2), dask_mapper(client))
    result = combine(parts, spec.times, 1.0, limits)
    elapsed = time.perf_counter() - start
    kpis = summary(result)["strategies"]
    print(f"{sites} sites x {hours} h, {', '.join(strategies)} ({scenario}): {elapsed:.1f} s "
          f"({sites * hours / elapsed:,.0f} site-steps/s); costs " + ", ".join(f"{k} {v['total_cost']:,.0f}" for k, v in kpis.items()))


def bench_archetypes(client) -> None:
    year = hourly(8760, pd.Timestamp("2025-01-01T00:00:00-08:00"))
    start = time.perf_counter()
    cache = archetypes.build_cache(year, partitions=2, mapper=dask_mapper(client))
    build = time.perf_counter() - start
    portfolio = archetypes.sites_frame(draw_sites(37_489, seed=2024))
    start = time.perf_counter()
    for name in archetypes.CACHED_STRATEGIES:
        cache.estimate(portfolio, name)
    estimate_s = time.perf_counter() - start
    sample = draw_fleet(200, seed=99)
    print(f"archetype cache: built in {build:.1f} s; 37,489 sites x {len(archetypes.CACHED_STRATEGIES)} strategies "
          f"estimated in {estimate_s:.3f} s")
    for name in archetypes.CACHED_STRATEGIES:
        start = time.perf_counter()
        err = archetypes.held_out_error(cache, sample, year, name, partitions=2, mapper=dask_mapper(client))
        full_per_site = (time.perf_counter() - start) / err["sites"]
        print(f"  {name}: held-out {err['sites']} sites MAE {err['mae']:.1f} = {err['mae_share']:.1%} of mean |annual cost|, "
              f"portfolio total off by {err['total_error_share']:.2%}; full simulation {full_per_site * 1e3:.0f} ms/site vs "
              f"estimate {estimate_s / len(portfolio) / len(archetypes.CACHED_STRATEGIES) * 1e6:.1f} us/site "
              f"(x{full_per_site / (estimate_s / len(portfolio) / 2):,.0f})")


def bench_replan(client) -> None:
    print(f"central re-plan, {speed.STEPS} steps of {speed.STEP_HOURS * 60:.0f} min, cycle {speed.CYCLE_S:.0f} s:")
    for n in (100, 300, 1000):
        r = speed.replan_rate(n)
        print(f"  joint LP      {n:>6} sites: {r['seconds']:7.2f} s, {r['sites_per_s']:7.0f} sites/s")
    for n in (100, 1000, 10_000):
        r = speed.replan_rate(n, group=100)
        print(f"  groups of 100 {n:>6} sites: {r['seconds']:7.2f} s, {r['sites_per_s']:7.0f} sites/s, 1 core"
              f" -> one core keeps up to ~{r['sites_per_s'] * speed.CYCLE_S:,.0f} sites")
    r = speed.replan_rate(10_000, group=100, mapper=dask_mapper(client), chunks=2)
    print(f"  groups of 100  10000 sites on 2 Dask workers: {r['seconds']:7.2f} s, {r['sites_per_s']:7.0f} sites/s"
          f" -> keeps up to ~{r['sites_per_s'] * speed.CYCLE_S:,.0f} sites")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default="small,year,archetypes,replan")
    parser.add_argument("--year-sites", type=int, default=10_000)
    args = parser.parse_args()
    print(describe(), f"load average {os.getloadavg()[0]:.2f} at start")
    parts = set(args.only.split(","))
    with dask_client(workers=2) as client:
        if "small" in parts:
            bench_fleet(client, 200, 744, STRATEGIES, "default")
        if "year" in parts:
            bench_fleet(client, args.year_sites, 8760, ("rule_based",), "none")
        if "archetypes" in parts:
            bench_archetypes(client)
        if "replan" in parts:
            bench_replan(client)
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
