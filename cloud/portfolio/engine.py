"""Run a portfolio: partitions of whole coordination groups, on Dask or in this process.

Two phases when the strategies need fleet limits (a central aggregator, a supply shortfall):
each partition first reports its no-battery baseline (integer fleet sums), the driver turns
the scenario into kW limits, then each partition runs its strategies. Partitions rebuild their
inputs in the second phase rather than hold sites x time arrays on the workers between
phases: exogenous physics is cheap next to a year of a large fleet's memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cloud.portfolio import strategies as strat
from cloud.portfolio.fleet import REGIONS, Fleet
from cloud.portfolio.inputs import UNITS_PER_KW, PartitionInputs, build_inputs, to_units
from cloud.portfolio.participation import deaf_sites
from cloud.portfolio.results import (
    PartitionResult,
    apply_stress,
    soc_histogram,
    summarise,
)
from cloud.portfolio.scenario import (
    FleetLimits,
    Scenario,
    local_clock,
    resolve,
    with_deaf_share,
)
from der_core.errors import UsageError

SITE_STEPS_PER_PARTITION = 2_000_000  # ~250 sites x a year hourly: a few hundred MB of inputs per task


@dataclass(frozen=True)
class RunSpec:
    fleet: Fleet
    times: pd.DatetimeIndex
    strategies: tuple[str, ...]
    scenario: Scenario
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.strategies:  # every stage and the report are per strategy; the first sets the fleet's load
            raise UsageError(f"--strategies: none given; expected some of {', '.join(strat.STRATEGIES)}")
        unknown = [s for s in self.strategies if s not in strat.STRATEGIES]
        if unknown:
            raise UsageError(f"--strategies: unknown {', '.join(unknown)}; expected some of {', '.join(strat.STRATEGIES)}")

    @property
    def needs_limits(self) -> bool:
        return "central" in self.strategies or self.scenario.supply_fraction is not None

    def runs(self) -> list[tuple[str, str, float]]:
        """(result key, strategy, share of sites deaf to the aggregator)."""
        out = [(s, s, self.scenario.deaf_share) for s in self.strategies]
        if "central" in self.strategies:
            out += [(f"central_deaf_{round(100 * d)}", "central", d) for d in self.scenario.deaf_sweep if d != self.scenario.deaf_share]
        return out


def partition_inputs(spec: RunSpec, sites: range) -> PartitionInputs:
    return build_inputs(spec.fleet.sites[sites.start : sites.stop], sites.start, spec.fleet.region, spec.times)


def partition_baseline(spec: RunSpec, sites: range) -> dict[str, np.ndarray]:
    inputs = partition_inputs(spec, sites)
    return {"net": to_units(inputs.net_load_kw).sum(axis=0), "load": to_units(inputs.load_kw).sum(axis=0)}


def fleet_limits(spec: RunSpec, baselines: list[dict[str, np.ndarray]]) -> FleetLimits:
    net = sum(b["net"] for b in baselines).astype(float) / UNITS_PER_KW
    load = sum(b["load"] for b in baselines).astype(float) / UNITS_PER_KW
    day, hour_of_day = local_clock(spec.times, REGIONS[spec.fleet.region]["timezone"])
    discharge = math.fsum(s.battery_kw for s in spec.fleet.sites if s.battery_kwh > 0)
    return resolve(spec.scenario, net, load, day, hour_of_day, discharge)


def _groups_in(spec: RunSpec, sites: range) -> tuple[range, ...]:
    return tuple(g for g in spec.fleet.groups() if sites.start <= g.start < sites.stop)


def run_partition(spec: RunSpec, sites: range, limits: FleetLimits | None) -> PartitionResult:
    """Every strategy of ``spec`` over one partition; only summaries leave the function."""
    inputs = partition_inputs(spec, sites)
    groups = _groups_in(spec, sites)
    result = PartitionResult(sites.start, [s.site_id for s in inputs.sites], [s.archetype for s in inputs.sites])
    result.aggregates["baseline"] = {"net": to_units(inputs.net_load_kw).sum(axis=0)}
    index = np.arange(sites.start, sites.stop)
    lim = limits if limits is not None else _no_limits(inputs.steps)
    for key, name, deaf_share in spec.runs():
        log = None
        if name == "central":
            ctx = strat.CentralContext(with_deaf_share(limits, deaf_share), spec.seed, len(spec.fleet), groups,
                                       tuple(math.fsum(spec.fleet.sites[i].battery_kw for i in g) for g in groups))
            outcome, log = strat.run_central(inputs, ctx)
        else:
            outcome = {"no_battery": strat.run_no_battery, "rule_based": strat.run_rule_based,
                       "decentralised": strat.run_decentralised}[name](inputs)
        outcome = apply_stress(inputs, outcome, lim, groups, ~deaf_sites(spec.seed, index, deaf_share))
        agg, site_rows = summarise(inputs, outcome, lim, central=name == "central")
        if log is not None:
            agg["planned"] = to_units(log.planned_grid_kw).sum(axis=0)
            site_rows["followed_days"] = log.followed.sum(axis=1)
            if key == "central":
                result.followed_per_day = log.followed.sum(axis=0)
                result.slack_kwh = (log.cap_slack_kwh, log.dr_slack_kwh)
        result.aggregates[key], result.sites[key] = agg, site_rows
        result.soc_hist[key] = soc_histogram(inputs, outcome.energy_kwh)
    return result


def _no_limits(steps: int) -> FleetLimits:
    nan = np.full(steps, np.nan)
    return FleetLimits(nan, nan, nan, nan, nan, nan, 0.0, 0.0, False)


def default_partitions(spec: RunSpec, workers: int) -> int:
    site_steps = len(spec.fleet) * len(spec.times)
    return max(workers, math.ceil(site_steps / SITE_STEPS_PER_PARTITION))


Mapper = Callable[[Callable, list], list]


def serial_map(func: Callable, items: list) -> list:
    return [func(item) for item in items]


def run_portfolio(spec: RunSpec, partitions: int = 1, mapper: Mapper = serial_map) -> tuple[list[PartitionResult], FleetLimits]:
    """Run ``spec`` over ``partitions`` partitions with ``mapper`` (serial, or Dask's)."""
    ranges = spec.fleet.partitions(partitions)
    limits = None
    if spec.needs_limits:
        limits = fleet_limits(spec, mapper(lambda r: partition_baseline(spec, r), ranges))
    results = mapper(lambda r: run_partition(spec, r, limits), ranges)
    if limits is None:
        baselines = [{"net": r.aggregates["baseline"]["net"], "load": r.aggregates[spec.strategies[0]]["load"]} for r in results]
        limits = fleet_limits(spec, baselines)
    return results, limits
