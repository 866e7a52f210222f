"""Per-partition results, small enough to ship between processes: fleet sums per step as
integers of 0.1 W (exact, order-free) and one summary row per site. Never site x time arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cloud.optimization.plan import stored_energy_value_per_kwh
from cloud.portfolio import stress
from cloud.portfolio.inputs import Outcome, PartitionInputs, site_bills, to_units
from cloud.portfolio.scenario import FleetLimits

SOC_BINS = 10
AGGREGATES = ("load", "served", "pv", "battery", "grid", "import", "export", "unserved", "deferred", "stored", "planned")


@dataclass
class PartitionResult:
    first: int
    site_ids: list[str]
    archetypes: list[str]
    aggregates: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # strategy -> name -> int64 (T,)
    soc_hist: dict[str, np.ndarray] = field(default_factory=dict)  # strategy -> int64 (T, SOC_BINS)
    sites: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # strategy -> column -> (n,)
    followed_per_day: np.ndarray | None = None  # central: sites that followed, per day
    slack_kwh: tuple[float, float] = (0.0, 0.0)


def apply_stress(inputs: PartitionInputs, outcome: Outcome, limits: FleetLimits, groups: tuple[range, ...],
                 hears: np.ndarray) -> Outcome:
    """The supply-shortfall response on top of a strategy's battery dispatch, group by group;
    each group rations its share of supply, pro rata to its load."""
    if not np.isfinite(limits.supply_kw).any():
        return outcome
    served, deferred, unserved = (np.zeros(inputs.load_kw.shape) for _ in range(3))
    components = {"ev_kw": inputs.ev_kw, "hvac_kw": inputs.hvac_kw, "appliances_kw": inputs.appliances_kw,
                  "other_kw": inputs.other_kw}
    for members in groups:
        rows = np.arange(members.start, members.stop) - inputs.first
        load_g = inputs.load_kw[rows].sum(axis=0)
        supply_g = limits.supply_kw * np.divide(load_g, limits.load_kw, out=np.zeros_like(load_g), where=limits.load_kw > 0)
        parts = {name: kw[rows] for name, kw in components.items()} | {"dt": inputs.step_hours}
        result = stress.respond(inputs.load_kw[rows], outcome.battery_kw[rows], inputs.pv_kw[rows], supply_g,
                                stress.deferrable_kw(parts), hears[rows], inputs.step_hours)
        served[rows], deferred[rows], unserved[rows] = result.served_load_kw, result.deferred_kw, result.unserved_kw
    return Outcome(outcome.battery_kw, outcome.energy_kwh, served, deferred, unserved)


def soc_histogram(inputs: PartitionInputs, energy_kwh: np.ndarray) -> np.ndarray:
    has = inputs.params.capacity_kwh > 0
    fraction = energy_kwh[has] / inputs.params.capacity_kwh[has, None]
    bins = np.clip((fraction * SOC_BINS).astype(np.int64), 0, SOC_BINS - 1)
    return np.stack([(bins == b).sum(axis=0) for b in range(SOC_BINS)], axis=1).astype(np.int64)


def summarise(inputs: PartitionInputs, outcome: Outcome, limits: FleetLimits, central: bool) -> tuple[dict, dict]:
    """Fleet sums per step (integer units) and per-site rows of one strategy."""
    dt = inputs.step_hours
    grid = outcome.grid_kw(inputs)
    imports, exports = np.maximum(grid, 0.0), np.maximum(-grid, 0.0)
    zeros = np.zeros(grid.shape)
    deferred = zeros if outcome.deferred_kw is None else outcome.deferred_kw
    unserved = zeros if outcome.unserved_kw is None else outcome.unserved_kw
    units = lambda a: to_units(a).sum(axis=0)  # noqa: E731
    agg = {"load": units(inputs.load_kw), "served": units(outcome.served_load_kw), "pv": units(inputs.pv_kw),
           "battery": units(outcome.battery_kw), "grid": units(grid), "import": units(imports), "export": units(exports),
           "unserved": units(unserved), "deferred": units(deferred), "stored": units(outcome.energy_kwh)}
    market = np.where(np.isnan(limits.market_price), 0.0, limits.market_price)
    premium = np.maximum(market[None, :] - inputs.feed_in_per_kwh, 0.0) if central else zeros
    sites = {
        "bill": site_bills(inputs, grid),
        "import_kwh": imports.sum(axis=1) * dt,
        "export_kwh": exports.sum(axis=1) * dt,
        "emissions_kg": (imports * inputs.carbon_g_kwh).sum(axis=1) * dt / 1000.0,
        "pv_kwh": inputs.pv_kw.sum(axis=1) * dt,
        "self_consumed_kwh": np.maximum(inputs.pv_kw - exports, 0.0).sum(axis=1) * dt,
        "peak_import_kw": imports.max(axis=1),
        "deferred_kwh": deferred.sum(axis=1) * dt,
        "deferred_hours": (deferred > 1e-9).sum(axis=1) * dt,
        "unserved_kwh": unserved.sum(axis=1) * dt,
        "market_revenue": (exports * premium).sum(axis=1) * dt,
        "battery_kwh": inputs.params.capacity_kwh.copy(),
        "stored_value": stored_value(inputs, outcome),
    }
    return agg, sites


def stored_value(inputs: PartitionInputs, outcome: Outcome) -> np.ndarray:
    """Per site, what the energy its battery gained over the run is worth (negative where it
    spent what it began with), as every plan values the energy it leaves
    (``plan.stored_energy_value_per_kwh``): strategies are compared by their bills less it, or
    one that ends a short run emptier than it began counts the energy it spent as money saved,
    and one that ends fuller (its own plan, keeping charge for tomorrow) as money lost."""
    gained = outcome.energy_kwh[:, -1] - inputs.initial_state().energy_kwh
    params = inputs.params
    return gained * stored_energy_value_per_kwh(inputs.price_per_kwh, params.discharge_efficiency, params.max_discharge_kw)
